// Package rfc2136 is a libdns provider that adds and deletes TXT records
// through RFC 2136 dynamic updates signed with TSIG (RFC 8945). It works with
// any primary server that accepts signed updates: BIND, Knot, PowerDNS,
// Windows DNS and others. certmagic uses it to answer ACME DNS-01 challenges.
//
// Only TXT records are supported; that is all DNS-01 needs.
package rfc2136

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// DefaultTTL is the TTL of records appended with a zero TTL.
const DefaultTTL = 60 * time.Second

// DefaultAlgorithm is the TSIG algorithm used when Provider.KeyAlg is empty.
const DefaultAlgorithm = "hmac-sha256"

// Provider sends signed dynamic updates to one primary server.
//
// A Provider is safe for concurrent use; updates are serialized. Its fields
// must not be changed after first use.
type Provider struct {
	// Server is the host:port of the primary server, e.g. "127.0.0.1:53".
	Server string
	// KeyName is the TSIG key name as the server knows it ("acme-update").
	KeyName string
	// KeyAlg is the TSIG algorithm ("hmac-sha256", "hmac-sha512", ...);
	// DefaultAlgorithm when empty.
	KeyAlg string
	// Key is the base64 TSIG secret.
	Key string
	// Timeout bounds one update exchange; 10s when zero.
	Timeout time.Duration

	mu sync.Mutex
}

// Validate reports a configuration error: a missing server, key name or
// secret, a secret that is not base64, or an unknown algorithm.
func (p *Provider) Validate() error {
	if p.Server == "" {
		return errors.New("rfc2136: server is required")
	}
	if p.KeyName == "" {
		return errors.New("rfc2136: TSIG key name is required")
	}
	if p.Key == "" {
		return errors.New("rfc2136: TSIG secret is required")
	}
	if _, err := base64.StdEncoding.DecodeString(p.Key); err != nil {
		return fmt.Errorf("rfc2136: TSIG secret is not base64: %w", err)
	}
	switch p.algorithm() {
	case dns.HmacSHA1, dns.HmacSHA224, dns.HmacSHA256, dns.HmacSHA384, dns.HmacSHA512:
	default:
		return fmt.Errorf("rfc2136: unsupported TSIG algorithm %q", p.KeyAlg)
	}
	return nil
}

func (p *Provider) algorithm() string {
	alg := p.KeyAlg
	if alg == "" {
		alg = DefaultAlgorithm
	}
	return dns.Fqdn(strings.ToLower(alg))
}

// AppendRecords adds TXT records to zone. It returns the records as given
// (names relative to zone, text unchanged), which certmagic relies on to
// recognise them later.
func (p *Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	rrs, out, err := p.toRRs(zone, recs)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	m.Insert(rrs)
	if err := p.exchange(ctx, zone, m); err != nil {
		return nil, fmt.Errorf("rfc2136: append to zone %q: %w", zone, err)
	}
	return out, nil
}

// DeleteRecords deletes exactly the given TXT records (name and text) from
// zone. Missing records are not an error.
func (p *Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	rrs, out, err := p.toRRs(zone, recs)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	m.Remove(rrs)
	if err := p.exchange(ctx, zone, m); err != nil {
		return nil, fmt.Errorf("rfc2136: delete from zone %q: %w", zone, err)
	}
	return out, nil
}

// toRRs converts libdns TXT records to miekg TXT RRs and to the typed
// libdns.TXT values returned to the caller.
func (p *Provider) toRRs(zone string, recs []libdns.Record) ([]dns.RR, []libdns.Record, error) {
	rrs := make([]dns.RR, 0, len(recs))
	out := make([]libdns.Record, 0, len(recs))
	for _, r := range recs {
		rr := r.RR()
		if rr.Type != "TXT" {
			return nil, nil, fmt.Errorf("rfc2136: record %q: type %q is not supported, only TXT", rr.Name, rr.Type)
		}
		ttl := rr.TTL
		if ttl <= 0 {
			ttl = DefaultTTL
		}
		rrs = append(rrs, &dns.TXT{
			Hdr: dns.RR_Header{
				Name:   libdns.AbsoluteName(rr.Name, dns.Fqdn(zone)),
				Rrtype: dns.TypeTXT,
				Class:  dns.ClassINET,
				Ttl:    uint32(ttl / time.Second),
			},
			Txt: chunks(rr.Data, 255),
		})
		out = append(out, libdns.TXT{Name: rr.Name, TTL: ttl, Text: rr.Data})
	}
	return rrs, out, nil
}

// exchange signs m with the TSIG key and sends it over TCP. Any rcode other
// than NOERROR is an error; a signature problem says so plainly.
func (p *Provider) exchange(ctx context.Context, zone string, m *dns.Msg) error {
	if err := p.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()

	keyName := dns.Fqdn(strings.ToLower(p.KeyName))
	m.SetTsig(keyName, p.algorithm(), 300, time.Now().Unix())
	timeout := p.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	c := &dns.Client{
		Net:        "tcp",
		Timeout:    timeout,
		TsigSecret: map[string]string{keyName: p.Key},
	}
	resp, _, err := c.ExchangeContext(ctx, m, p.Server)
	if err != nil {
		if errors.Is(err, dns.ErrAuth) || errors.Is(err, dns.ErrSig) || errors.Is(err, dns.ErrKey) {
			return fmt.Errorf("server %s rejected TSIG key %q (wrong secret, key name or algorithm?): %w", p.Server, p.KeyName, err)
		}
		return fmt.Errorf("server %s: %w", p.Server, err)
	}
	if resp.Rcode != dns.RcodeSuccess {
		msg := dns.RcodeToString[resp.Rcode]
		if resp.Rcode == dns.RcodeNotAuth || resp.Rcode == dns.RcodeBadSig || resp.Rcode == dns.RcodeBadKey {
			msg += fmt.Sprintf(" (TSIG key %q not accepted: wrong secret or key name, or the zone does not grant it updates)", p.KeyName)
		}
		if resp.Rcode == dns.RcodeRefused {
			msg += fmt.Sprintf(" (the server does not allow key %q to update this zone, or is not primary for it)", p.KeyName)
		}
		return fmt.Errorf("server %s answered %s", p.Server, msg)
	}
	return nil
}

// chunks splits s into pieces of at most n bytes, as a TXT record holds
// character strings of at most 255 bytes, and escapes backslashes because
// miekg/dns holds TXT strings in presentation form.
func chunks(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, escape(s[:n]))
		s = s[n:]
	}
	return append(out, escape(s))
}

func escape(s string) string { return strings.ReplaceAll(s, `\`, `\\`) }

// Interface guards.
var (
	_ libdns.RecordAppender = (*Provider)(nil)
	_ libdns.RecordDeleter  = (*Provider)(nil)
)
