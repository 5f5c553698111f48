package rfc2136_test

import (
	"context"
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"

	"stagesub.dev/router/acme/acmetest"
	"stagesub.dev/router/dnsprovider/rfc2136"
)

func startNamed(t *testing.T) (*acmetest.Named, *rfc2136.Provider) {
	t.Helper()
	n := acmetest.StartNamed(t, acmetest.NamedConfig{Zones: []acmetest.Zone{{Name: "stagesub.test", Hosts: []string{"@"}}}})
	return n, &rfc2136.Provider{Server: n.Addr, KeyName: n.KeyName, KeyAlg: n.KeyAlg, Key: n.Secret}
}

func txt(name, text string) libdns.Record {
	return libdns.RR{Type: "TXT", Name: name, Data: text}
}

func TestAppendDelete(t *testing.T) {
	t.Parallel()
	n, p := startNamed(t)
	ctx := context.Background()
	const fqdn = "_acme-challenge.stagesub.test"

	got, err := p.AppendRecords(ctx, "stagesub.test.", []libdns.Record{txt("_acme-challenge", "one")})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].RR().Name != "_acme-challenge" || got[0].RR().Data != "one" || got[0].RR().TTL != rfc2136.DefaultTTL {
		t.Errorf("AppendRecords returned %+v, want the record unchanged with the default TTL", got)
	}
	if _, err := p.AppendRecords(ctx, "stagesub.test.", []libdns.Record{txt("_acme-challenge", "two")}); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 300)
	if _, err := p.AppendRecords(ctx, "stagesub.test.", []libdns.Record{txt("long", long)}); err != nil {
		t.Fatal(err)
	}

	vals := n.TXT(t, fqdn)
	slices.Sort(vals)
	if got, want := strings.Join(vals, ","), "one,two"; got != want {
		t.Errorf("TXT after append = %q, want %q", got, want)
	}
	if got, want := n.TXT(t, "long.stagesub.test"), []string{long}; !slices.Equal(got, want) {
		t.Errorf("long TXT = %q, want %d bytes in chunks", got, len(long))
	}

	if _, err := p.DeleteRecords(ctx, "stagesub.test.", []libdns.Record{txt("_acme-challenge", "one")}); err != nil {
		t.Fatal(err)
	}
	if got, want := n.TXT(t, fqdn), []string{"two"}; !slices.Equal(got, want) {
		t.Errorf("TXT after deleting one = %q, want %q", got, want)
	}
	// Deleting a record that is not there is fine.
	if _, err := p.DeleteRecords(ctx, "stagesub.test", []libdns.Record{txt("_acme-challenge", "one")}); err != nil {
		t.Errorf("deleting a missing record: %v", err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	n, good := startNamed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	wrong := base64.StdEncoding.EncodeToString([]byte("not the secret, not at all......"))
	tests := []struct {
		name     string
		p        *rfc2136.Provider
		zone     string
		rec      libdns.Record
		contains string
	}{
		{"ErrWrongSecret", &rfc2136.Provider{Server: n.Addr, KeyName: n.KeyName, Key: wrong}, "stagesub.test.", txt("x", "v"), "wrong secret"},
		{"ErrUnknownKey", &rfc2136.Provider{Server: n.Addr, KeyName: "nobody", Key: n.Secret}, "stagesub.test.", txt("x", "v"), "TSIG"},
		{"ErrNotTXT", good, "stagesub.test.", libdns.RR{Type: "A", Name: "x", Data: "127.0.0.1"}, "only TXT"},
		{"ErrZoneNotServed", good, "other.test.", txt("x", "v"), "other.test"},
		{"ErrNoServer", &rfc2136.Provider{KeyName: "k", Key: n.Secret}, "stagesub.test.", txt("x", "v"), "server is required"},
		{"ErrBadBase64", &rfc2136.Provider{Server: n.Addr, KeyName: "k", Key: "%%%"}, "stagesub.test.", txt("x", "v"), "not base64"},
		{"ErrAlgorithm", &rfc2136.Provider{Server: n.Addr, KeyName: "k", KeyAlg: "md4", Key: n.Secret}, "stagesub.test.", txt("x", "v"), "unsupported TSIG algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.p.AppendRecords(ctx, tt.zone, []libdns.Record{tt.rec})
			if err == nil {
				t.Fatal("AppendRecords succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
		})
	}
	if got := n.TXT(t, "x.stagesub.test"); len(got) != 0 {
		t.Errorf("a rejected update left TXT %q", got)
	}
}
