package acmetest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"stagesub.dev/internal/syncbuf"
)

// Zone is one primary zone served by named.
type Zone struct {
	// Name is the zone apex without trailing dot, e.g. "stagesub.test".
	Name string
	// Hosts are names relative to the zone ("@" for the apex, "goteborg",
	// "*") that get an A record 127.0.0.1, so that the CA's HTTP-01 and
	// TLS-ALPN validation dials loopback.
	Hosts []string
}

// NamedConfig configures StartNamed.
type NamedConfig struct {
	Zones []Zone
	// KeyName is the TSIG key allowed to update TXT records in every zone;
	// "acme-update" when empty.
	KeyName string
}

// Named is a running BIND named, authoritative for the configured zones on
// 127.0.0.1, with update-policy granting the TSIG key TXT updates.
type Named struct {
	// Addr is "127.0.0.1:PORT", for UDP and TCP.
	Addr string
	// KeyName, KeyAlg and Secret (base64) are the TSIG key.
	KeyName, KeyAlg, Secret string
	// Dir holds named.conf, zone files, journals and named.log.
	Dir string

	log *syncbuf.Buffer
}

// StartNamed writes a configuration for cfg and starts named in the
// foreground (-g) on a free loopback port; it returns once the first zone
// answers SOA queries. named is killed by tb.Cleanup.
func StartNamed(tb testing.TB, cfg NamedConfig) *Named {
	tb.Helper()
	bin := LookPath(tb, "named")
	if len(cfg.Zones) == 0 {
		tb.Fatal("acmetest: StartNamed needs at least one zone")
	}
	if cfg.KeyName == "" {
		cfg.KeyName = "acme-update"
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		tb.Fatal(err)
	}
	n := &Named{
		KeyName: cfg.KeyName,
		KeyAlg:  "hmac-sha256",
		Secret:  base64.StdEncoding.EncodeToString(secret),
		Dir:     tb.TempDir(),
	}
	for _, z := range cfg.Zones {
		if err := os.WriteFile(filepath.Join(n.Dir, "db."+z.Name), []byte(zoneFile(z)), 0o644); err != nil {
			tb.Fatal(err)
		}
	}

	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := FreePort(tb)
		n.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf := filepath.Join(n.Dir, "named.conf")
		if err := os.WriteFile(conf, []byte(n.conf(cfg, port)), 0o644); err != nil {
			tb.Fatal(err)
		}
		n.log = &syncbuf.Buffer{}
		cmd := exec.Command(bin, "-g", "-n", "1", "-c", conf)
		cmd.Dir = n.Dir
		ready := func() error { return n.ready(cfg.Zones[0].Name) }
		if lastErr = startProcess(tb, "named", cmd, n.log, ready); lastErr == nil {
			return n
		}
		if !strings.Contains(n.log.String(), "address in use") {
			break
		}
	}
	tb.Fatalf("acmetest: named did not start: %v\n%s", lastErr, n.log.String())
	return nil
}

func (n *Named) conf(cfg NamedConfig, port int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "key %q { algorithm %s; secret %q; };\n", n.KeyName, n.KeyAlg, n.Secret)
	fmt.Fprintf(&b, `options {
	directory %q;
	pid-file %q;
	session-keyfile %q;
	managed-keys-directory %q;
	listen-on port %d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	allow-query { 127.0.0.1; };
	dnssec-validation no;
	notify no;
};
controls { };
`, n.Dir, filepath.Join(n.Dir, "named.pid"), filepath.Join(n.Dir, "session.key"), n.Dir, port)
	for _, z := range cfg.Zones {
		fmt.Fprintf(&b, "zone %q { type primary; file %q; update-policy { grant %s. zonesub TXT; }; };\n",
			z.Name, filepath.Join(n.Dir, "db."+z.Name), n.KeyName)
	}
	return b.String()
}

func zoneFile(z Zone) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL 60\n", z.Name)
	fmt.Fprintf(&b, "@ IN SOA ns1.%s. hostmaster.%s. 1 3600 600 86400 60\n", z.Name, z.Name)
	fmt.Fprintf(&b, "@ IN NS ns1.%s.\nns1 IN A 127.0.0.1\n", z.Name)
	for _, h := range z.Hosts {
		fmt.Fprintf(&b, "%s IN A 127.0.0.1\n", h)
	}
	return b.String()
}

// ready reports whether named answers SOA queries for zone.
func (n *Named) ready(zone string) error {
	resp, err := n.query(zone, dns.TypeSOA)
	if err != nil {
		return err
	}
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) == 0 {
		return fmt.Errorf("SOA %s: rcode %s", zone, dns.RcodeToString[resp.Rcode])
	}
	return nil
}

func (n *Named) query(name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: time.Second}
	resp, _, err := c.Exchange(m, n.Addr)
	return resp, err
}

// TXT returns the texts of the TXT records at name (joined per record), in
// the server's order; none when the name has no TXT records.
func (n *Named) TXT(tb testing.TB, name string) []string {
	tb.Helper()
	resp, err := n.query(name, dns.TypeTXT)
	if err != nil {
		tb.Fatalf("acmetest: TXT %s: %v", name, err)
	}
	var out []string
	for _, rr := range resp.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out
}

// Log returns what named printed so far.
func (n *Named) Log() string { return n.log.String() }
