package certs_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stagesub.dev/router/certs"
)

func TestLoadOrCreateCA_KeptOnDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	ca1, err := certs.LoadOrCreateCA(dir, certs.CAOptions{Base: "stagesub.test"})
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := certs.LoadOrCreateCA(dir, certs.CAOptions{Base: "stagesub.test"})
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
	for _, tt := range []struct {
		name          string
		unconstrained bool
		customVerify  bool // whether the allowed custom domain's certificate verifies
		warnings      int
	}{
		{"Constrained", false, false, 1},
		{"Unconstrained", true, true, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := certs.LoadOrCreateCA(t.TempDir(), certs.CAOptions{Base: "StageSub.Test.", Unconstrained: tt.unconstrained})
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			custom := map[string]bool{"vikarier.gso.se": true}
			in, err := certs.NewInternal(ca, "StageSub.Test", func(h string) bool { return custom[h] }, logger)
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca.Cert)
			cfg := in.TLSConfig()
			for _, c := range []struct {
				sni    string
				verify bool
			}{
				{"stagesub.test", true},
				{"goteborg.stagesub.test", true},
				{"admin.stagesub.test", true},
				{"vikarier.gso.se", tt.customVerify},
				{"evil.example", false}, // not allowed: gets the base certificate, which does not cover it
				{"a.b.stagesub.test", false},
			} {
				cert, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: c.sni})
				if err != nil {
					t.Fatal(err)
				}
				_, err = cert.Leaf.Verify(x509.VerifyOptions{DNSName: c.sni, Roots: pool, CurrentTime: time.Now()})
				if got := err == nil; got != c.verify {
					t.Errorf("%s: verifies %v want %v (%v)", c.sni, got, c.verify, err)
				}
			}
			cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "vikarier.gso.se"}) // cached: no second warning
			if got, want := strings.Count(logs.String(), "outside the internal CA's name constraints"), tt.warnings; got != want {
				t.Errorf("warnings got %d want %d:\n%s", got, want, logs.String())
			}
		})
	}
}

func TestInternal_CustomCached(t *testing.T) {
	ca, err := certs.LoadOrCreateCA(t.TempDir(), certs.CAOptions{Unconstrained: true})
	if err != nil {
		t.Fatal(err)
	}
	in, err := certs.NewInternal(ca, "stagesub.test", func(h string) bool { return h == "vikarier.gso.se" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := in.TLSConfig()
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
	ca, err := certs.LoadOrCreateCA(t.TempDir(), certs.CAOptions{Base: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	in, err := certs.NewInternal(ca, "localhost", nil, nil)
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

// TestCA_NameConstraints checks that a new CA only vouches for its base
// domain and loopback addresses, whatever leaf its key signs.
func TestCA_NameConstraints(t *testing.T) {
	for _, base := range []string{"stagesub.test", "localhost"} {
		t.Run(base, func(t *testing.T) {
			ca, err := certs.LoadOrCreateCA(t.TempDir(), certs.CAOptions{Base: base})
			if err != nil {
				t.Fatal(err)
			}
			if !ca.Constrained() {
				t.Fatal("new CA has no name constraints")
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca.Cert)
			for _, tt := range []struct {
				name   string // issued and verified
				verify bool
			}{
				{"goteborg." + base, true},
				{base, true},
				{"a.b." + base, true},
				{"evil.example", false},
				{"evil" + base, false}, // a suffix, not a subdomain
				{base + ".evil.example", false},
				{"127.0.0.1", true},
				{"::1", true},
				{"10.0.0.1", false},
			} {
				leaf, err := ca.Issue(tt.name)
				if err != nil {
					t.Fatal(err)
				}
				// For an IP literal, Verify checks the IP SANs.
				_, err = leaf.Leaf.Verify(x509.VerifyOptions{DNSName: tt.name, Roots: pool, CurrentTime: time.Now()})
				if got := err == nil; got != tt.verify {
					t.Errorf("%s: verifies %v want %v (%v)", tt.name, got, tt.verify, err)
				}
				if net.ParseIP(tt.name) == nil {
					if got := ca.Permits(tt.name); got != tt.verify {
						t.Errorf("Permits(%s) got %v want %v", tt.name, got, tt.verify)
					}
				}
			}
		})
	}
}

func TestLoadOrCreateCA_Options(t *testing.T) {
	if _, err := certs.LoadOrCreateCA(t.TempDir(), certs.CAOptions{}); err == nil {
		t.Error("new constrained CA without a base: got nil error")
	}
	// An existing CA is used as it is: an unconstrained one stays so.
	dir := t.TempDir()
	old, err := certs.LoadOrCreateCA(dir, certs.CAOptions{Unconstrained: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := certs.LoadOrCreateCA(dir, certs.CAOptions{Base: "stagesub.test"})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(old.Cert) || got.Constrained() {
		t.Errorf("existing unconstrained CA replaced or changed: constrained %v", got.Constrained())
	}
	if !got.Permits("evil.example") {
		t.Error("unconstrained CA: Permits(evil.example) got false want true")
	}
}
