package router_test

import (
	"testing"

	"stagesub.dev/router"
)

func TestParseTLSMode(t *testing.T) {
	for _, s := range []string{"internal", "files", "acme", "off"} {
		got, err := router.ParseTLSMode(s)
		if err != nil || string(got) != s {
			t.Errorf("%q: got %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "on", "ACME"} {
		if _, err := router.ParseTLSMode(s); err == nil {
			t.Errorf("%q: got nil error", s)
		}
	}
}
