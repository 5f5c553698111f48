package acmetest

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"stagesub.dev/router/acme"
)

// StackConfig configures Start.
type StackConfig struct {
	// Base is the base domain, e.g. "stagesub.test"; its zone gets an A
	// record 127.0.0.1 for the apex.
	Base string
	// Customers are zones for custom domains; list in Hosts the names the CA
	// must be able to reach (A 127.0.0.1).
	Customers []Zone
	// HTTPPort and TLSPort are the router's HTTP and HTTPS ports on
	// 127.0.0.1, where pebble validates HTTP-01 and TLS-ALPN-01; 0 picks
	// free ones (then nothing listens there until the caller binds them).
	HTTPPort, TLSPort int
}

// Stack is named plus pebble, wired together for one test.
type Stack struct {
	Base              string
	Named             *Named
	Pebble            *Pebble
	HTTPPort, TLSPort int
}

// Start starts named (zones for Base and every customer zone, one TSIG
// key) and pebble resolving through it.
func Start(tb testing.TB, cfg StackConfig) *Stack {
	tb.Helper()
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = FreePort(tb)
	}
	if cfg.TLSPort == 0 {
		cfg.TLSPort = FreePort(tb)
	}
	zones := append([]Zone{{Name: cfg.Base, Hosts: []string{"@"}}}, cfg.Customers...)
	n := StartNamed(tb, NamedConfig{Zones: zones})
	p := StartPebble(tb, PebbleConfig{DNSServer: n.Addr, HTTPPort: cfg.HTTPPort, TLSPort: cfg.TLSPort})
	return &Stack{Base: cfg.Base, Named: n, Pebble: p, HTTPPort: cfg.HTTPPort, TLSPort: cfg.TLSPort}
}

// Config returns an acme.Config for this stack: pebble as CA, the RFC 2136
// provider with named's TSIG key, named as resolver with propagation checks
// off (pebble asks named directly), file storage in a fresh temp dir.
func (s *Stack) Config(tb testing.TB) acme.Config {
	tb.Helper()
	return acme.Config{
		CA:                 s.Pebble.DirectoryURL,
		Email:              "ops@" + s.Base,
		Agreed:             true,
		CARoots:            []string{s.Pebble.ServerCAFile},
		DNSProvider:        acme.ProviderRFC2136,
		RFC2136Server:      s.Named.Addr,
		RFC2136KeyName:     s.Named.KeyName,
		RFC2136KeyAlg:      s.Named.KeyAlg,
		RFC2136Secret:      s.Named.Secret,
		Resolvers:          []string{s.Named.Addr},
		PropagationTimeout: -1,
		DNSTTL:             10 * time.Second,
		Storage:            acme.StorageFile,
		StorageDir:         tb.TempDir(),
		OnDemandLimit:      100,
		OnDemandWindow:     time.Hour,
		HTTPPort:           s.HTTPPort,
		TLSPort:            s.TLSPort,
	}
}

// Environ returns the same configuration as environment variables
// ("KEY=value"), for starting stagesub-router as a process; storageDir is
// the file storage directory.
func (s *Stack) Environ(storageDir string) []string {
	return []string{
		acme.EnvCA + "=" + s.Pebble.DirectoryURL,
		acme.EnvEmail + "=ops@" + s.Base,
		acme.EnvAgree + "=true",
		acme.EnvCARoots + "=" + s.Pebble.ServerCAFile,
		acme.EnvDNSProvider + "=" + acme.ProviderRFC2136,
		acme.EnvRFC2136Server + "=" + s.Named.Addr,
		acme.EnvRFC2136Key + "=" + s.Named.KeyName,
		acme.EnvRFC2136Alg + "=" + s.Named.KeyAlg,
		acme.EnvRFC2136Secret + "=" + s.Named.Secret,
		acme.EnvDNSResolvers + "=" + s.Named.Addr,
		acme.EnvDNSTimeout + "=off",
		acme.EnvStorage + "=" + acme.StorageFile,
		acme.EnvStorageDir + "=" + storageDir,
		acme.EnvHTTPPort + "=" + strconv.Itoa(s.HTTPPort),
		acme.EnvTLSPort + "=" + strconv.Itoa(s.TLSPort),
	}
}

// String describes the stack for logs.
func (s *Stack) String() string {
	return strings.Join([]string{"named=" + s.Named.Addr, "pebble=" + s.Pebble.DirectoryURL}, " ")
}
