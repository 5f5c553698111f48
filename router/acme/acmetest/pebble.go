package acmetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"stagesub.dev/internal/syncbuf"
)

// PebbleConfig configures StartPebble.
type PebbleConfig struct {
	// DNSServer is the host:port pebble resolves every name with (for
	// DNS-01 TXT lookups and HTTP-01/TLS-ALPN addresses): a Named's Addr.
	DNSServer string
	// HTTPPort and TLSPort are where pebble validates HTTP-01 and
	// TLS-ALPN-01 challenges on the resolved address; 0 means unused
	// (a free port nobody listens on).
	HTTPPort, TLSPort int
}

// Pebble is a running pebble ACME server on loopback.
type Pebble struct {
	// DirectoryURL is the ACME directory, "https://127.0.0.1:PORT/dir".
	DirectoryURL string
	// ManagementURL is the base of the management API (roots, intermediates).
	ManagementURL string
	// ServerCA signs pebble's own HTTPS certificate (made by StartPebble):
	// trust it to talk to DirectoryURL (certmagic ACMEIssuer.TrustedRoots).
	ServerCA *x509.CertPool
	// ServerCAFile is ServerCA as a PEM file.
	ServerCAFile string
	// Dir holds the configuration and certificates.
	Dir string

	log *syncbuf.Buffer
}

// StartPebble starts pebble with -dnsserver cfg.DNSServer, no authorization
// reuse (every order solves its challenges), no validation
// sleep and no nonce rejection, on free loopback ports, with an HTTPS
// certificate it makes; it returns once the directory answers. pebble is
// killed by tb.Cleanup.
func StartPebble(tb testing.TB, cfg PebbleConfig) *Pebble {
	tb.Helper()
	bin := LookPath(tb, "pebble")
	p := &Pebble{Dir: tb.TempDir()}
	certFile, keyFile := p.writeServerCert(tb)
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = FreePort(tb)
	}
	if cfg.TLSPort == 0 {
		cfg.TLSPort = FreePort(tb)
	}

	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		acmeAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(tb)))
		mgmtAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(tb)))
		p.DirectoryURL = "https://" + acmeAddr + "/dir"
		p.ManagementURL = "https://" + mgmtAddr
		conf := map[string]any{"pebble": map[string]any{
			"listenAddress":                  acmeAddr,
			"managementListenAddress":        mgmtAddr,
			"certificate":                    certFile,
			"privateKey":                     keyFile,
			"httpPort":                       cfg.HTTPPort,
			"tlsPort":                        cfg.TLSPort,
			"ocspResponderURL":               "",
			"externalAccountBindingRequired": false,
		}}
		confFile := filepath.Join(p.Dir, "pebble-config.json")
		b, _ := json.Marshal(conf)
		if err := os.WriteFile(confFile, b, 0o644); err != nil {
			tb.Fatal(err)
		}
		p.log = &syncbuf.Buffer{}
		cmd := exec.Command(bin, "-config", confFile, "-dnsserver", cfg.DNSServer)
		cmd.Dir = p.Dir
		cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
		c := p.client()
		lastErr = startProcess(tb, "pebble", cmd, p.log, func() error { return p.ready(c) })
		c.CloseIdleConnections()
		if lastErr == nil {
			return p
		}
		if !strings.Contains(p.log.String(), "address already in use") {
			break
		}
	}
	tb.Fatalf("acmetest: pebble did not start: %v\n%s", lastErr, p.log.String())
	return nil
}

// writeServerCert makes a CA and a localhost/127.0.0.1 certificate for
// pebble's HTTPS listeners and returns the certificate and key files.
func (p *Pebble) writeServerCert(tb testing.TB) (certFile, keyFile string) {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "acmetest pebble server CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	p.ServerCAFile = filepath.Join(p.Dir, "server-ca.pem")
	certFile = filepath.Join(p.Dir, "cert.pem")
	keyFile = filepath.Join(p.Dir, "key.pem")
	for file, block := range map[string]*pem.Block{
		p.ServerCAFile: {Type: "CERTIFICATE", Bytes: caDER},
		certFile:       {Type: "CERTIFICATE", Bytes: der},
		keyFile:        {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	p.ServerCA = x509.NewCertPool()
	p.ServerCA.AddCert(ca)
	return certFile, keyFile
}

func (p *Pebble) client() *http.Client {
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ServerCA}},
	}
}

// ready reports whether pebble's directory answers 200 to c.
func (p *Pebble) ready(c *http.Client) error {
	resp, err := c.Get(p.DirectoryURL)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", p.DirectoryURL, resp.Status)
	}
	return nil
}

// Root fetches the root that pebble signs certificates with (it changes
// every start) from the management API, as PEM.
func (p *Pebble) Root(tb testing.TB) []byte {
	tb.Helper()
	c := p.client()
	defer c.CloseIdleConnections()
	resp, err := c.Get(p.ManagementURL + "/roots/0")
	if err != nil {
		tb.Fatalf("acmetest: pebble root: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("acmetest: pebble root: %s %v", resp.Status, err)
	}
	return b
}

// Roots returns Root as a pool, to verify served chains with.
func (p *Pebble) Roots(tb testing.TB) *x509.CertPool {
	tb.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.Root(tb)) {
		tb.Fatal("acmetest: pebble root is not PEM")
	}
	return pool
}

// Orders returns how many orders pebble has created so far (counted from
// its log line "Added order").
func (p *Pebble) Orders() int { return strings.Count(p.log.String(), "Added order") }

// Issued returns how many certificates pebble has issued so far.
func (p *Pebble) Issued() int { return strings.Count(p.log.String(), "Issued certificate serial") }

// Log returns what pebble printed so far.
func (p *Pebble) Log() string { return p.log.String() }
