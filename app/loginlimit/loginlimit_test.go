package loginlimit

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// TestReserve checks that a client's burst is enforced, that refunded
// attempts come back, and that a refused attempt takes nothing.
func TestReserve(t *testing.T) {
	l := New(rate.Every(10*time.Second), 3, DefaultGlobalRate, DefaultGlobalBurst)
	for i := range 3 {
		if _, ok := l.Reserve("a", t0); !ok {
			t.Fatalf("attempt %d refused within the burst", i+1)
		}
	}
	if _, ok := l.Reserve("a", t0); ok {
		t.Fatal("attempt beyond the burst allowed")
	}
	if _, ok := l.Reserve("b", t0); !ok {
		t.Fatal("another client refused")
	}
	if _, ok := l.Reserve("a", t0.Add(10*time.Second)); !ok {
		t.Fatal("attempt refused after one period")
	}

	l = New(rate.Every(10*time.Second), 2, DefaultGlobalRate, DefaultGlobalBurst)
	for i := range 10 {
		refund, ok := l.Reserve("a", t0)
		if !ok {
			t.Fatalf("attempt %d refused although every attempt was refunded", i+1)
		}
		refund()
	}
}

// TestReserveGlobal checks the limit over all clients: once it is spent no
// client gets an attempt, and the refused client's budget is left whole.
func TestReserveGlobal(t *testing.T) {
	l := New(rate.Every(10*time.Second), 5, rate.Every(time.Hour), 2)
	for _, c := range []string{"a", "b"} {
		if _, ok := l.Reserve(c, t0); !ok {
			t.Fatalf("%s refused within the global burst", c)
		}
	}
	if _, ok := l.Reserve("c", t0); ok {
		t.Fatal("attempt beyond the global burst allowed")
	}
	if got := l.clientLimiter("c").TokensAt(t0); got != 5 {
		t.Errorf("client c has %v tokens after a refused attempt, want 5", got)
	}
}

// TestAllow checks Allow against the per-client and the global burst.
func TestAllow(t *testing.T) {
	l := New(rate.Every(10*time.Second), 2, rate.Every(time.Hour), 3)
	if !l.Allow("a", t0) || !l.Allow("a", t0) {
		t.Fatal("attempts within the burst refused")
	}
	if l.Allow("a", t0) {
		t.Fatal("attempt beyond the client burst allowed")
	}
	if !l.Allow("b", t0) {
		t.Fatal("another client refused")
	}
	if l.Allow("c", t0) {
		t.Fatal("attempt beyond the global burst allowed")
	}
}

// TestClientsBounded checks that the clients map is reset when full.
func TestClientsBounded(t *testing.T) {
	l := New(rate.Every(10*time.Second), 1, rate.Inf, 0)
	l.max = 3
	for i := range 10 {
		l.Reserve(fmt.Sprint("client", i), t0)
		if n := len(l.clients); n > l.max {
			t.Fatalf("clients map has %d entries, max %d", n, l.max)
		}
	}
}

func TestClientIP(t *testing.T) {
	loopback := DefaultTrustedProxies()
	tests := []struct {
		name, remote string
		xff          []string
		trusted      []netip.Prefix
		want         string
	}{
		{"NoXFF", "192.0.2.1:1234", nil, loopback, "192.0.2.1"},
		{"TrustedPeer", "127.0.0.1:1234", []string{"198.51.100.7"}, loopback, "198.51.100.7"},
		{"Rightmost", "127.0.0.1:1234", []string{"10.9.9.9, 198.51.100.7"}, loopback, "198.51.100.7"},
		{"LastHeader", "127.0.0.1:1234", []string{"10.9.9.9", "203.0.113.5"}, loopback, "203.0.113.5"},
		{"UntrustedPeer", "192.0.2.1:1234", []string{"198.51.100.7"}, loopback, "192.0.2.1"},
		{"NoTrusted", "127.0.0.1:1234", []string{"198.51.100.7"}, nil, "127.0.0.1"},
		{"BadXFF", "127.0.0.1:1234", []string{"unknown"}, loopback, "127.0.0.1"},
		{"IPv6Loopback", "[::1]:1234", []string{"2001:db8::7"}, loopback, "2001:db8::7"},
		{"MappedPeer", "[::ffff:127.0.0.1]:1234", []string{"198.51.100.7"}, loopback, "198.51.100.7"},
		{"MappedPeerNoXFF", "[::ffff:192.0.2.1]:1234", nil, loopback, "192.0.2.1"},
		{"MappedXFF", "127.0.0.1:1234", []string{"::ffff:198.51.100.7"}, loopback, "198.51.100.7"},
		{"NotAnIP", "pipe", nil, loopback, "pipe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := ClientIP(r, tt.trusted); got != tt.want {
				t.Errorf("ClientIP = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.0.0.0/8", "[10.0.0.0/8]"},
		{" 10.1.2.3/8 , 192.0.2.7,fd00::/8,", "[10.0.0.0/8 192.0.2.7/32 fd00::/8]"},
		{"::ffff:192.0.2.7", "[192.0.2.7/32]"},
		{"::1", "[::1/128]"},
	}
	for _, tt := range tests {
		got, err := ParseTrustedProxies(tt.in)
		if err != nil {
			t.Fatalf("%q: %v", tt.in, err)
		}
		if s := fmt.Sprint(got); s != tt.want {
			t.Errorf("%q: got %s, want %s", tt.in, s, tt.want)
		}
	}
	for _, in := range []string{"", " , ", "router", "10.0.0.0/33"} {
		if _, err := ParseTrustedProxies(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	if got := fmt.Sprint(DefaultTrustedProxies()); got != "[127.0.0.0/8 ::1/128]" {
		t.Errorf("DefaultTrustedProxies = %s", got)
	}
}
