package route_test

import (
	"strings"
	"testing"

	"stagesub.dev/router/route"
)

// FuzzNormalizeHost checks NormalizeHost's invariants on arbitrary Host
// headers: the result is lowercase, has no port, no trailing dot, is at most
// MaxHostLen long, normalizing it again is a no-op, and a Table lookup of
// any input never panics nor routes a host that is not the normalized one.
func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{
		"goteborg.stagesub.test", "GOTEBORG.StageSub.Test:8443", "goteborg.stagesub.test.",
		"[::1]:80", "[::1", "a..b", "", ".", ":", "a:b:c", "x.stagesub.test.:0",
		strings.Repeat("a", 254), "admin.stagesub.test", "vikarier.gso.se", "ñ.example",
	} {
		f.Add(s)
	}
	tab := mustBuild(f, fleet(), nil)
	f.Fuzz(func(t *testing.T, host string) {
		got := route.CanonicalHost(host)
		r := tab.Lookup(host)
		if got == "" {
			if r.Kind != route.KindUnknown {
				t.Fatalf("%q: invalid host routed to %v", host, r.Kind)
			}
			return
		}
		if len(got) > route.MaxHostLen || strings.HasSuffix(got, ".") || got != strings.ToLower(got) {
			t.Fatalf("%q: bad normalization %q", host, got)
		}
		if got[0] != '[' && strings.Contains(got, ":") {
			t.Fatalf("%q: port kept in %q", host, got)
		}
		if again := route.CanonicalHost(got); again != got {
			t.Fatalf("%q: not idempotent: %q then %q", host, got, again)
		}
		if r2 := tab.Lookup(got); r2 != r {
			t.Fatalf("%q: lookup differs from lookup of %q", host, got)
		}
	})
}
