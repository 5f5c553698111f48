package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"stagesub.dev/router/certs"
)

func TestLoadOrCreateCA_KeptOnDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	ca1, err := certs.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := certs.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ca1.Cert.Equal(ca2.Cert) {
		t.Error("second load made a new CA")
	}
	if got, want := ca1.CertPath, filepath.Join(dir, certs.CACertFile); got != want {
		t.Errorf("path got %q want %q", got, want)
	}
	st, err := os.Stat(filepath.Join(dir, certs.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key mode got %v want %v", got, want)
	}
}

func TestInternal(t *testing.T) {
	ca, err := certs.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	custom := map[string]bool{"vikarier.gso.se": true}
	in, err := certs.NewInternal(ca, "StageSub.Test", func(h string) bool { return custom[h] })
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cfg := in.TLSConfig()
	for _, tt := range []struct {
		sni    string
		verify bool
	}{
		{"stagesub.test", true},
		{"goteborg.stagesub.test", true},
		{"admin.stagesub.test", true},
		{"vikarier.gso.se", true},
		{"evil.example", false}, // not allowed: gets the base certificate, which does not cover it
		{"a.b.stagesub.test", false},
	} {
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Leaf.Verify(x509.VerifyOptions{DNSName: tt.sni, Roots: pool, CurrentTime: time.Now()})
		if got := err == nil; got != tt.verify {
			t.Errorf("%s: verifies %v want %v (%v)", tt.sni, got, tt.verify, err)
		}
	}
	c1, _ := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "vikarier.gso.se"})
	c2, _ := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "VIKARIER.gso.se."})
	if c1 != c2 {
		t.Error("custom certificate not cached")
	}
}

func TestFiles_ErrMissing(t *testing.T) {
	if _, err := certs.NewFiles(filepath.Join(t.TempDir(), "no.pem"), "no-key.pem", nil); err == nil {
		t.Error("got nil error for missing files")
	}
}

// TestInternal_SingleLabelBase checks that under a one-label base such as the
// dev stack's "localhost" every direct child gets a certificate naming it
// exactly: curl and Chromium reject a *.localhost wildcard.
func TestInternal_SingleLabelBase(t *testing.T) {
	ca, err := certs.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	in, err := certs.NewInternal(ca, "localhost", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := in.TLSConfig()
	for _, tt := range []struct {
		sni  string
		want string // a DNS name the leaf must list exactly
	}{
		{"goteborg.localhost", "goteborg.localhost"},
		{"Admin.localhost.", "admin.localhost"},
		{"localhost", "localhost"},
		{"a.b.localhost", "localhost"}, // deeper names get the main certificate
	} {
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, n := range c.Leaf.DNSNames {
			found = found || n == tt.want
		}
		if !found {
			t.Errorf("%s: DNSNames = %v, want it to list %q", tt.sni, c.Leaf.DNSNames, tt.want)
		}
	}
	c1, _ := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "malmo.localhost"})
	c2, _ := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "malmo.localhost"})
	if c1 != c2 {
		t.Error("per-name certificate not cached")
	}
}
