package doctor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/consullock"
	"stagesub.dev/deploy/doctor"
	"stagesub.dev/deploy/local"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry/consul"
	"stagesub.dev/registry/consuldev"
)

const base = "stagesub.test"

func buildBinary(tb testing.TB, dir, pkg string) string {
	tb.Helper()
	bin := filepath.Join(dir, filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startRouter runs the real router with its internal CA; it returns the
// HTTPS URL, the CA file and a stop function.
func startRouter(tb testing.TB, bin, consulAddr, dir string) (string, string, func()) {
	tb.Helper()
	https, tlsDir := freeAddr(tb), filepath.Join(dir, "tls")
	cmd := exec.Command(bin)
	cmd.Env = []string{
		"CONSUL_HTTP_ADDR=" + consulAddr, "STAGESUB_BASE_DOMAIN=" + base,
		"STAGESUB_ROUTER_HTTP_ADDR=" + freeAddr(tb), "STAGESUB_ROUTER_HTTPS_ADDR=" + https,
		"STAGESUB_ROUTER_ADMIN_ADDR=" + freeAddr(tb), "STAGESUB_ROUTER_REGISTER=false",
		"STAGESUB_TLS_MODE=internal", "STAGESUB_STATE_DIR=" + dir, "STAGESUB_TLS_DIR=" + tlsDir,
		"STAGESUB_LOG_LEVEL=warn", "STAGESUB_ACCESS_LOG=false",
	}
	logf, _ := os.Create(filepath.Join(dir, "router.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
			logf.Close()
		}
	}
	tb.Cleanup(stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", https, time.Second); err == nil {
			c.Close()
			if _, err := os.Stat(filepath.Join(tlsDir, "ca.pem")); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "router.log"))
			tb.Fatalf("router did not start:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "https://" + https, filepath.Join(tlsDir, "ca.pem"), stop
}

// startDNS answers A queries for *.base with 127.0.0.1 and NXDOMAIN otherwise.
func startDNS(tb testing.TB) string {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		if strings.HasSuffix(name, "."+base+".") && !strings.HasPrefix(name, "nodns.") {
			if q.Question[0].Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 1)})
			}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go srv.ActivateAndServe()
	tb.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// waitFor runs the doctor until cond holds (bounded).
func waitFor(tb testing.TB, d *doctor.Doctor, slug, what string, cond func(*doctor.Report) bool) *doctor.Report {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := d.Check(context.Background(), slug)
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not reached after 30s; last report: %+v", what, r.Checks)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func firstFailed(r *doctor.Report) string {
	if f := r.Failed(); len(f) > 0 {
		return f[0]
	}
	return ""
}

// TestDoctorFaults runs a real tenant (Postgres, app instance, router with
// its internal CA, Consul stand-in, a DNS server) and injects one fault at a
// time: the doctor's first failing check names it.
func TestDoctorFaults(t *testing.T) {
	c := pgtest.New(t, pgtest.WithTCP())
	ctx := context.Background()
	if err := c.Exec(ctx, "postgres", "CREATE ROLE stagesub_admin LOGIN CREATEDB CREATEROLE PASSWORD 'admin-pw'"); err != nil {
		t.Fatal(err)
	}
	srv, err := postgres.Open(ctx, "default", c.TCPURL("stagesub_admin", "admin-pw", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cs := consuldev.StartTest(t, consuldev.Config{})
	client := cs.Client(t)
	store := consul.NewStore(client)
	dir := t.TempDir()
	sec := secrets.Dir{Path: filepath.Join(dir, "secrets")}
	appBin := buildBinary(t, dir, "stagesub.dev/app/cmd/stagesub-app")
	routerBin := buildBinary(t, dir, "stagesub.dev/router/cmd/stagesub-router")
	target, err := local.New(local.Config{Binary: appBin, LogDir: filepath.Join(dir, "logs"), BaseEnv: []string{"PATH=" + os.Getenv("PATH")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Close(context.Background()) })
	p := &deploy.Provisioner{
		Store: store, Locker: consullock.Locker{Client: client}, Secrets: sec,
		Servers: map[string]deploy.DBServer{"default": srv}, DefaultServer: "default",
		OpenDB: postgres.OpenTenant, Target: target, ConsulAddr: cs.Addr(),
		AppEnv: []string{"CONSUL_HTTP_ADDR=" + cs.Addr(), "STAGESUB_BASE_DOMAIN=" + base},
	}
	if _, err := p.Create(ctx, deploy.CreateRequest{Slug: "doc", Name: "Doc SO", Start: true}); err != nil {
		t.Fatal(err)
	}
	routerURL, caFile, stopRouter := startRouter(t, routerBin, cs.Addr(), filepath.Join(dir, "router"))
	d := &doctor.Doctor{
		Store: store, Consul: client, ConsulAddr: cs.Addr(), Secrets: sec, BaseDomain: base,
		Resolver: startDNS(t), RouterURL: routerURL, CAFile: caFile, Timeout: 3 * time.Second,
	}

	healthy := waitFor(t, d, "doc", "healthy", func(r *doctor.Report) bool { return r.OK() })
	for _, ch := range healthy.Checks {
		if ch.Result != doctor.OK {
			t.Errorf("healthy: %s = %s (%s)", ch.Name, ch.Result, ch.Detail)
		}
	}
	if got := healthy.Get(doctor.CheckCertificate).Detail; !strings.Contains(got, "doc."+base) {
		t.Errorf("certificate detail = %q", got)
	}

	t.Run("no dns", func(t *testing.T) {
		r := d.Check(ctx, "nodns")
		if got, want := firstFailed(r), doctor.CheckDNS; got != want {
			t.Errorf("first failed = %q, want %q: %+v", got, want, r.Checks)
		}
	})
	t.Run("no record", func(t *testing.T) {
		saved, _ := store.FindTenant(ctx, "doc")
		if err := store.DeleteTenant(ctx, "doc"); err != nil {
			t.Fatal(err)
		}
		r := d.Check(ctx, "doc")
		if got, want := firstFailed(r), doctor.CheckRecord; got != want {
			t.Errorf("first failed = %q, want %q: %+v", got, want, r.Checks)
		}
		if got := r.Get(doctor.CheckRecord).Remedy; !strings.Contains(got, "tenant create doc") {
			t.Errorf("remedy = %q", got)
		}
		saved.ModifyIndex = 0
		if err := store.CreateTenant(ctx, saved); err != nil {
			t.Fatal(err)
		}
		waitFor(t, d, "doc", "record back", func(r *doctor.Report) bool { return r.OK() })
	})
	t.Run("no instance", func(t *testing.T) {
		if err := target.Stop(ctx, "doc"); err != nil {
			t.Fatal(err)
		}
		r := waitFor(t, d, "doc", "instance gone", func(r *doctor.Report) bool { return firstFailed(r) != "" })
		if got, want := firstFailed(r), doctor.CheckInstances; got != want {
			t.Errorf("first failed = %q, want %q: %+v", got, want, r.Checks)
		}
		if got, want := r.Get(doctor.CheckRouter).Result, doctor.Skip; got != want {
			t.Errorf("router check = %s, want %s (depends on an instance)", got, want)
		}
		if err := target.Start(ctx, deploy.AppSpec{Tenant: "doc", EnvFile: sec.File("doc"), Env: p.AppEnv}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, d, "doc", "instance back", func(r *doctor.Report) bool { return r.OK() })
	})
	t.Run("router not routing", func(t *testing.T) {
		stopRouter()
		r := d.Check(ctx, "doc")
		if got, want := firstFailed(r), doctor.CheckRouter; got != want {
			t.Errorf("first failed = %q, want %q: %+v", got, want, r.Checks)
		}
	})
	t.Run("database down", func(t *testing.T) {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		r := d.Check(ctx, "doc")
		if got, want := firstFailed(r), doctor.CheckDatabase; got != want {
			t.Errorf("first failed = %q, want %q: %+v", got, want, r.Checks)
		}
		if got := r.Get(doctor.CheckDatabase).Detail; !strings.Contains(got, "cannot connect") {
			t.Errorf("database detail = %q", got)
		}
	})
}

// TestCertificate checks expiry and verification against a TLS server with
// a certificate from a test CA.
func TestCertificate(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)

	serve := func(validFor time.Duration) string {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "*." + base},
			DNSNames: []string{"*." + base}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(validFor),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		s := httptest.NewUnstartedServer(http.NotFoundHandler())
		s.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
		s.StartTLS()
		t.Cleanup(s.Close)
		return s.URL
	}
	tests := []struct {
		name     string
		validFor time.Duration
		ca       string
		want     doctor.Result
		detail   string
	}{
		{"valid", 60 * 24 * time.Hour, caFile, doctor.OK, "days"},
		{"expiring", 5 * 24 * time.Hour, caFile, doctor.Fail, "expires"},
		{"unknown CA", 60 * 24 * time.Hour, "", doctor.Fail, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &doctor.Doctor{BaseDomain: base, RouterURL: serve(tt.validFor), CAFile: tt.ca, Timeout: 2 * time.Second}
			got := checkCert(d)
			if got.Result != tt.want || !strings.Contains(got.Detail, tt.detail) {
				t.Errorf("got %s (%s), want %s containing %q", got.Result, got.Detail, tt.want, tt.detail)
			}
		})
	}
}

// checkCert runs the whole doctor without a store and picks the certificate check.
func checkCert(d *doctor.Doctor) doctor.Check {
	return d.Certificate(context.Background(), "goteborg")
}
