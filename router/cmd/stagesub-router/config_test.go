package main_test

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"stagesub.dev/router"
	main "stagesub.dev/router/cmd/stagesub-router"
)

func TestLoad(t *testing.T) {
	t.Run("Defaults", func(t *testing.T) {
		c, err := main.Load(nil, []string{"STAGESUB_BASE_DOMAIN=localhost"})
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct{ name, got, want string }{
			{"http", c.HTTPAddr, "127.0.0.1:8080"},
			{"https", c.HTTPSAddr, "127.0.0.1:8443"},
			{"tls", string(c.TLSMode), "internal"},
			{"tlsdir", c.TLSDir, filepath.Join(".stagesub", "tls")},
			{"consul", c.ConsulAddr, "127.0.0.1:8500"},
		} {
			if tt.got != tt.want {
				t.Errorf("%s got %q want %q", tt.name, tt.got, tt.want)
			}
		}
		if c.ReadHeaderTimeout != 10*time.Second || c.MaxHeaderBytes != 64<<10 || !c.AccessLog || !c.Register {
			t.Errorf("defaults: %+v", c)
		}
	})
	t.Run("EnvAndFlags", func(t *testing.T) {
		c, err := main.Load([]string{"-tls=off", "-http=127.0.0.1:9999"}, []string{
			"STAGESUB_BASE_DOMAIN=stagesub.com", "STAGESUB_ROUTER_HTTP_ADDR=127.0.0.1:1",
			"STAGESUB_TRUSTED_PROXIES=10.0.0.0/8, 192.168.1.7", "STAGESUB_ROUTER_UPSTREAM_TIMEOUT=5s",
			"CONSUL_HTTP_ADDR=127.0.0.1:8501", "STAGESUB_STATE_DIR=/var/lib/stagesub",
		})
		if err != nil {
			t.Fatal(err)
		}
		if c.TLSMode != router.TLSOff || c.HTTPAddr != "127.0.0.1:9999" || c.UpstreamTimeout != 5*time.Second ||
			c.ConsulAddr != "127.0.0.1:8501" || c.TLSDir != "/var/lib/stagesub/tls" {
			t.Errorf("got %+v", c)
		}
		want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}
		if len(c.TrustedProxies) != 2 || c.TrustedProxies[0] != want[0] || c.TrustedProxies[1] != want[1] {
			t.Errorf("trusted got %v want %v", c.TrustedProxies, want)
		}
	})
	for name, tt := range map[string]struct {
		args, env []string
	}{
		"ErrNoBase":       {nil, nil},
		"ErrTLSMode":      {[]string{"-tls=magic"}, []string{"STAGESUB_BASE_DOMAIN=x.test"}},
		"ErrFilesNoCert":  {nil, []string{"STAGESUB_BASE_DOMAIN=x.test", "STAGESUB_TLS_MODE=files"}},
		"ErrDuration":     {nil, []string{"STAGESUB_BASE_DOMAIN=x.test", "STAGESUB_ROUTER_IDLE_TIMEOUT=soon"}},
		"ErrTrustedProxy": {nil, []string{"STAGESUB_BASE_DOMAIN=x.test", "STAGESUB_TRUSTED_PROXIES=nope"}},
		"ErrFlag":         {[]string{"-nope"}, []string{"STAGESUB_BASE_DOMAIN=x.test"}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := main.Load(tt.args, tt.env); err == nil {
				t.Error("got nil error")
			}
		})
	}
}

func TestMainLoad_ACMEWired(t *testing.T) {
	m := main.NewMain()
	err := m.Load(nil, []string{"STAGESUB_BASE_DOMAIN=x.test", "STAGESUB_TLS_MODE=acme"})
	if err == nil || !strings.Contains(err.Error(), "STAGESUB_ACME") {
		t.Errorf("acme without its settings: got %v, want an error naming STAGESUB_ACME_*", err)
	}
	m = main.NewMain()
	if err := m.Load(nil, []string{"STAGESUB_BASE_DOMAIN=x.test", "STAGESUB_TLS_MODE=acme",
		"STAGESUB_ACME_EMAIL=ops@x.test", "STAGESUB_ACME_AGREE=true", "STAGESUB_ACME_RFC2136_SERVER=127.0.0.1:53",
		"STAGESUB_ACME_RFC2136_KEY_NAME=k", "STAGESUB_ACME_RFC2136_KEY_SECRET=c2VjcmV0"}); err != nil {
		t.Fatal(err)
	}
	if m.NewCertSource == nil {
		t.Error("NewCertSource not wired for acme")
	}
}

func TestLoad_BlockPaths(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{"Default", nil, nil, []string{"/metrics"}},
		{"EmptyDisables", nil, []string{"STAGESUB_ROUTER_BLOCK_PATHS="}, nil},
		{"List", nil, []string{"STAGESUB_ROUTER_BLOCK_PATHS=/metrics, /debug//vars/"}, []string{"/metrics", "/debug/vars"}},
		{"FlagWins", []string{"-block-paths="}, []string{"STAGESUB_ROUTER_BLOCK_PATHS=/metrics"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := main.Load(tt.args, append([]string{"STAGESUB_BASE_DOMAIN=x.test"}, tt.env...))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.BlockPaths; !slices.Equal(got, tt.want) {
				t.Errorf("BlockPaths got %q want %q", got, tt.want)
			}
		})
	}
	if _, err := main.Load(nil, []string{"STAGESUB_BASE_DOMAIN=x.test", "STAGESUB_ROUTER_BLOCK_PATHS=metrics"}); err == nil {
		t.Error("relative block path: got nil error")
	}
}

func TestLoad_CAUnconstrained(t *testing.T) {
	for _, tt := range []struct {
		env  string
		want bool
	}{{"", false}, {"STAGESUB_INTERNAL_CA_UNCONSTRAINED=true", true}, {"STAGESUB_INTERNAL_CA_UNCONSTRAINED=false", false}} {
		c, err := main.Load(nil, []string{"STAGESUB_BASE_DOMAIN=x.test", tt.env})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.CAUnconstrained; got != tt.want {
			t.Errorf("%q: CAUnconstrained got %v want %v", tt.env, got, tt.want)
		}
	}
}
