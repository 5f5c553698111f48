// Package certs provides the router's non-ACME certificate sources: a local
// development CA (Internal) and certificate files reloaded on change (Files).
// Both implement router.CertSource.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"stagesub.dev/router/route"
)

// CA file names inside the CA directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// CA is a local certificate authority kept on disk.
type CA struct {
	Cert     *x509.Certificate
	CertPath string // PEM file to hand to curl --cacert or a trust store
	key      crypto.Signer
	certDER  []byte
}

// CAOptions configure the CA that LoadOrCreateCA creates when dir holds
// none. They never change a CA already on disk.
type CAOptions struct {
	// Base is the base domain. A new CA is name-constrained to it: its
	// leaves verify only for Base and names below it (DNS) and for loopback
	// addresses (127.0.0.0/8, ::1), so a leaked CA key cannot impersonate
	// other sites to a browser that trusts the CA. Required unless
	// Unconstrained.
	Base string
	// Unconstrained creates the CA without name constraints, so that
	// certificates for custom domains (outside Base) verify too.
	Unconstrained bool
}

// LoadOrCreateCA loads the CA from dir, creating the directory (0700) and a
// new ECDSA P-256 CA valid for 10 years, constrained per o, when none
// exists. The key file is written with mode 0600. An existing CA is loaded
// as it is, constrained or not.
func LoadOrCreateCA(dir string, o CAOptions) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return createCA(dir, certPath, keyPath, o)
	}
	if err != nil {
		return nil, fmt.Errorf("certs: read CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("certs: read CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA %s: %w", certPath, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("certs: parse CA %s: %w", certPath, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certs: CA key %s cannot sign", keyPath)
	}
	return &CA{Cert: cert, CertPath: certPath, key: signer, certDER: pair.Certificate[0]}, nil
}

func createCA(dir, certPath, keyPath string, o CAOptions) (*CA, error) {
	base := route.CanonicalHost(o.Base)
	if base == "" && !o.Unconstrained {
		return nil, errors.New("certs: create CA: a base domain is required for the name constraints")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: create CA dir: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "StageSub local development CA", Organization: []string{"StageSub dev"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if !o.Unconstrained {
		// Critical, as RFC 5280 §4.2.1.10 requires: a client that cannot
		// enforce the constraints must reject the CA rather than ignore them.
		tmpl.PermittedDNSDomainsCritical = true
		tmpl.PermittedDNSDomains = []string{base}
		tmpl.PermittedIPRanges = []*net.IPNet{
			{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)},
			{IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)},
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: create CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal CA key: %w", err)
	}
	// Key first, so a crash never leaves a certificate without its key.
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse CA: %w", err)
	}
	return &CA{Cert: cert, CertPath: certPath, key: key, certDER: der}, nil
}

// writeFile writes atomically: a temporary file renamed into place.
func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// Constrained reports whether the CA carries DNS name constraints.
func (ca *CA) Constrained() bool {
	return len(ca.Cert.PermittedDNSDomains) > 0 || len(ca.Cert.ExcludedDNSDomains) > 0
}

// Permits reports whether a leaf for the DNS name (canonical: lower case,
// no trailing dot) can verify under the CA's DNS name constraints: it is
// within a permitted domain (the domain itself or a name below it), when
// there are any, and within no excluded one.
func (ca *CA) Permits(name string) bool {
	within := func(d string) bool {
		d = strings.ToLower(strings.TrimPrefix(d, "."))
		return name == d || strings.HasSuffix(name, "."+d)
	}
	for _, d := range ca.Cert.ExcludedDNSDomains {
		if within(d) {
			return false
		}
	}
	return len(ca.Cert.PermittedDNSDomains) == 0 || slices.ContainsFunc(ca.Cert.PermittedDNSDomains, within)
}

// Issue returns a leaf certificate for names (DNS names or IP addresses),
// valid for 90 days, with the CA in its chain.
func (ca *CA) Issue(names ...string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: leaf key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(0, 0, 90),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("certs: issue %v: %w", names, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse leaf: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.certDER}, PrivateKey: key, Leaf: leaf}, nil
}

// Internal serves certificates from a local CA: one for the base domain, its
// wildcard, admin and www (plus 127.0.0.1), made at start, and one per
// custom domain that allowed accepts, issued on first use and cached. When the
// base domain is a single label (the dev stack's "localhost"), each direct
// child name also gets its own certificate, because clients reject *.localhost.
//
// A name-constrained CA (see CAOptions) issues custom-domain certificates
// that clients refuse (the name is outside the constraints); Internal still
// issues them, so the client's error names the cause, and logs a warning
// once per certificate. Use a CA created with CAOptions.Unconstrained to
// test custom domains over HTTPS in internal mode.
type Internal struct {
	ca      *CA
	base    string
	main    *tls.Certificate
	allowed func(host string) bool
	log     *slog.Logger

	mu     sync.Mutex
	custom map[string]*tls.Certificate
}

// NewInternal issues the base certificate. allowed decides custom domains
// (typically route.Holder.IsCustomDomain); nil allows none. logger gets the
// warnings about names the CA's constraints exclude; nil is slog.Default().
func NewInternal(ca *CA, base string, allowed func(host string) bool, logger *slog.Logger) (*Internal, error) {
	base = route.CanonicalHost(base)
	if base == "" {
		return nil, errors.New("certs: invalid base domain")
	}
	if logger == nil {
		logger = slog.Default()
	}
	if !ca.Permits(base) {
		logger.Warn("internal CA is constrained to other domains: no certificate will verify; remove the CA directory to create a new one",
			"ca", ca.CertPath, "permitted", ca.Cert.PermittedDNSDomains, "base", base)
	}
	main, err := ca.Issue(base, "*."+base, "admin."+base, "www."+base, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	if allowed == nil {
		allowed = func(string) bool { return false }
	}
	return &Internal{ca: ca, base: base, main: main, allowed: allowed, log: logger, custom: map[string]*tls.Certificate{}}, nil
}

// TLSConfig returns a config whose GetCertificate picks by SNI.
func (in *Internal) TLSConfig() *tls.Config {
	return &tls.Config{GetCertificate: in.getCertificate, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
}

// HTTPHandler returns next unchanged.
func (in *Internal) HTTPHandler(next http.Handler) http.Handler { return next }

// maxIssued bounds the per-name certificates kept in memory; past it the
// cache starts afresh (names are re-issued on their next handshake).
const maxIssued = 10000

func (in *Internal) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := route.CanonicalHost(hello.ServerName)
	switch {
	case name == "" || name == in.base:
		return in.main, nil
	case hasSuffixLabel(name, in.base):
		// TLS clients such as curl and Chromium refuse a wildcard whose
		// suffix is a single label (*.localhost), so for a one-label base
		// each direct child gets its own certificate. Deeper names are
		// served the main certificate and fail verification, as they should.
		if strings.Contains(in.base, ".") || strings.Contains(name[:len(name)-len(in.base)-1], ".") {
			return in.main, nil
		}
	case !in.allowed(name):
		return in.main, nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if c := in.custom[name]; c != nil && time.Until(c.Leaf.NotAfter) > 24*time.Hour {
		return c, nil
	}
	c, err := in.ca.Issue(name)
	if err != nil {
		return nil, err
	}
	if !in.ca.Permits(name) {
		in.log.Warn("custom domain is outside the internal CA's name constraints: clients will refuse its certificate; "+
			"create the CA with STAGESUB_INTERNAL_CA_UNCONSTRAINED=true (remove the CA directory first) to test custom domains over HTTPS",
			"host", name, "ca", in.ca.CertPath, "permitted", in.ca.Cert.PermittedDNSDomains)
	}
	if len(in.custom) >= maxIssued {
		in.custom = map[string]*tls.Certificate{}
	}
	in.custom[name] = c
	return c, nil
}

func hasSuffixLabel(name, base string) bool {
	return len(name) > len(base)+1 && name[len(name)-len(base)-1] == '.' && name[len(name)-len(base):] == base
}
