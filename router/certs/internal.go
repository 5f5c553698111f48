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
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
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

// LoadOrCreateCA loads the CA from dir, creating the directory (0700) and a
// new ECDSA P-256 CA valid for 10 years when none exists. The key file is
// written with mode 0600.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return createCA(dir, certPath, keyPath)
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

func createCA(dir, certPath, keyPath string) (*CA, error) {
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
type Internal struct {
	ca      *CA
	base    string
	main    *tls.Certificate
	allowed func(host string) bool

	mu     sync.Mutex
	custom map[string]*tls.Certificate
}

// NewInternal issues the base certificate. allowed decides custom domains
// (typically route.Holder.IsCustomDomain); nil allows none.
func NewInternal(ca *CA, base string, allowed func(host string) bool) (*Internal, error) {
	base = route.CanonicalHost(base)
	if base == "" {
		return nil, errors.New("certs: invalid base domain")
	}
	main, err := ca.Issue(base, "*."+base, "admin."+base, "www."+base, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	if allowed == nil {
		allowed = func(string) bool { return false }
	}
	return &Internal{ca: ca, base: base, main: main, allowed: allowed, custom: map[string]*tls.Certificate{}}, nil
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
	if len(in.custom) >= maxIssued {
		in.custom = map[string]*tls.Certificate{}
	}
	in.custom[name] = c
	return c, nil
}

func hasSuffixLabel(name, base string) bool {
	return len(name) > len(base)+1 && name[len(name)-len(base)-1] == '.' && name[len(name)-len(base):] == base
}
