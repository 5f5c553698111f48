package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	main "stagesub.dev/admin/cmd/stagesub-admin"
	"stagesub.dev/admin/password"
)

const testHash = "$2a$04$abcdefghijklmnopqrstuu5Cq9rsPDgPpHS1pDcTQmGqV0iDIc.Sm"

func TestLoad(t *testing.T) {
	base := []string{"STAGESUB_ADMIN_USER=root", "STAGESUB_ADMIN_PASSWORD_HASH=" + testHash}

	t.Run("Defaults", func(t *testing.T) {
		m := main.NewMain(io.Discard)
		if err := m.Load(nil, append(base, "STAGESUB_BASE_DOMAIN=StageSub.com.")); err != nil {
			t.Fatal(err)
		}
		c := m.Config
		for _, tt := range []struct{ what, got, want string }{
			{"listen", c.Listen, "127.0.0.1:0"},
			{"consul", c.ConsulAddr, "127.0.0.1:8500"},
			{"panel", c.PanelURL, "https://{slug}.stagesub.com/"},
			{"concurrency", strconv.Itoa(c.Concurrency), "16"},
			{"timeout", c.Timeout.String(), "2s"},
			{"interval", c.Interval.String(), "30s"},
			{"change detection", strconv.FormatBool(c.ChangeDetection), "true"},
			{"full interval", c.FullInterval.String(), "10m0s"},
		} {
			if tt.got != tt.want {
				t.Errorf("%s = %q, want %q", tt.what, tt.got, tt.want)
			}
		}
		if !c.Register || !c.SessionKeyRandom || len(c.SessionKey) != 32 {
			t.Errorf("register=%v random key=%v len=%d", c.Register, c.SessionKeyRandom, len(c.SessionKey))
		}
	})

	t.Run("Overrides", func(t *testing.T) {
		m := main.NewMain(io.Discard)
		err := m.Load(nil, append(base, "STAGESUB_STATS_CONCURRENCY=4", "STAGESUB_STATS_TIMEOUT=500ms",
			"STAGESUB_STATS_INTERVAL=1m", "STAGESUB_STATS_CHANGE_DETECTION=off", "STAGESUB_STATS_FULL_INTERVAL=5m",
			"STAGESUB_PANEL_URL=https://{slug}.localhost:8443/", "STAGESUB_REGISTER=0",
			"STAGESUB_SESSION_KEY="+strings.Repeat("ab", 32)))
		if err != nil {
			t.Fatal(err)
		}
		c := m.Config
		if c.ChangeDetection || c.FullInterval != 5*time.Minute {
			t.Errorf("change detection = %v, full interval = %s, want false, 5m", c.ChangeDetection, c.FullInterval)
		}
		if c.Concurrency != 4 || c.Timeout != 500*time.Millisecond || c.Interval != time.Minute || c.Register ||
			c.PanelURL != "https://{slug}.localhost:8443/" || c.SessionKeyRandom || len(c.SessionKey) != 32 {
			t.Errorf("config = %+v", c)
		}
	})

	t.Run("StateFile", func(t *testing.T) {
		tests := []struct {
			env  []string
			want string
		}{
			{nil, ""},
			{[]string{"STATE_DIRECTORY=/var/lib/stagesub-admin"}, "/var/lib/stagesub-admin/stats.json"},
			{[]string{"STATE_DIRECTORY=/var/lib/a:/var/lib/b"}, "/var/lib/a/stats.json"},
			{[]string{"STATE_DIRECTORY=/var/lib/stagesub-admin", "STAGESUB_ADMIN_STATE_FILE=/srv/admin/state.json"}, "/srv/admin/state.json"},
			{[]string{"STATE_DIRECTORY=/var/lib/stagesub-admin", "STAGESUB_ADMIN_STATE_FILE=off"}, ""},
			{[]string{"STAGESUB_ADMIN_STATE_FILE=OFF"}, ""},
			{[]string{"STAGESUB_ADMIN_STATE_FILE=/tmp//x/../stats.json"}, "/tmp/stats.json"},
		}
		for _, tt := range tests {
			m := main.NewMain(io.Discard)
			if err := m.Load(nil, append(append([]string{}, base...), tt.env...)); err != nil {
				t.Fatalf("%q: %v", tt.env, err)
			}
			if got := m.Config.StateFile; got != tt.want {
				t.Errorf("%q: state file = %q, want %q", tt.env, got, tt.want)
			}
		}
	})

	t.Run("TrustedProxies", func(t *testing.T) {
		tests := []struct {
			env, want string
		}{
			{"", "[127.0.0.0/8 ::1/128]"},
			{"STAGESUB_TRUSTED_PROXIES=10.0.0.0/8", "[10.0.0.0/8]"},
			{"STAGESUB_TRUSTED_PROXIES= 10.1.2.3/8 , 192.0.2.7,fd00::/8,", "[10.0.0.0/8 192.0.2.7/32 fd00::/8]"},
		}
		for _, tt := range tests {
			m := main.NewMain(io.Discard)
			if err := m.Load(nil, append(base, tt.env)); err != nil {
				t.Fatalf("%q: %v", tt.env, err)
			}
			if got := fmt.Sprint(m.Config.TrustedProxies); got != tt.want {
				t.Errorf("%q: trusted proxies = %s, want %s", tt.env, got, tt.want)
			}
		}
	})

	t.Run("ErrTrustedProxies", func(t *testing.T) {
		for _, v := range []string{"10.0.0.0/33", "router", "10.0.0.0/8;192.0.2.0/24", ","} {
			err := main.NewMain(io.Discard).Load(nil, append(base, "STAGESUB_TRUSTED_PROXIES="+v))
			if err == nil || !strings.Contains(err.Error(), "STAGESUB_TRUSTED_PROXIES") {
				t.Errorf("%q: Load error = %v, want one naming STAGESUB_TRUSTED_PROXIES", v, err)
				continue
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("%q: error is not one line: %q", v, err)
			}
		}
	})

	errs := []struct {
		name string
		env  []string
	}{
		{"ErrNoUser", []string{"STAGESUB_ADMIN_PASSWORD_HASH=" + testHash}},
		{"ErrNoHash", []string{"STAGESUB_ADMIN_USER=root"}},
		{"ErrBadHash", []string{"STAGESUB_ADMIN_USER=root", "STAGESUB_ADMIN_PASSWORD_HASH=secret"}},
		{"ErrConcurrency", append(base, "STAGESUB_STATS_CONCURRENCY=0")},
		{"ErrTimeout", append(base, "STAGESUB_STATS_TIMEOUT=soon")},
		{"ErrChangeDetection", append(base, "STAGESUB_STATS_CHANGE_DETECTION=maybe")},
		{"ErrFullInterval", append(base, "STAGESUB_STATS_FULL_INTERVAL=-1m")},
		{"ErrSessionKey", append(base, "STAGESUB_SESSION_KEY=short")},
		{"ErrPanelURL", append(base, "STAGESUB_PANEL_URL=https://example.com/")},
		{"ErrStatsDSN", append(base, "STAGESUB_STATS_DSN=postgres://%zz")},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			if err := main.NewMain(io.Discard).Load(nil, tt.env); err == nil {
				t.Error("Load succeeded")
			}
		})
	}
}

func TestHashPassword(t *testing.T) {
	var out bytes.Buffer
	if err := main.HashPassword(strings.NewReader("my very long password\n"), &out); err != nil {
		t.Fatal(err)
	}
	h := strings.TrimSpace(out.String())
	if err := password.Verify(h, "my very long password"); err != nil {
		t.Errorf("Verify(hash-password output) = %v", err)
	}
	if err := main.HashPassword(strings.NewReader("short\n"), io.Discard); err == nil {
		t.Error("short password accepted")
	}
}

// TestBinaryBadTrustedProxiesExits2 runs the built binary with a bad
// STAGESUB_TRUSTED_PROXIES: one line on stderr, exit code 2.
func TestBinaryBadTrustedProxiesExits2(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "stagesub-admin")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"STAGESUB_ADMIN_USER=root", "STAGESUB_ADMIN_PASSWORD_HASH=" + testHash, "STAGESUB_TRUSTED_PROXIES=10.0.0.0/33"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit = %v, want code 2", err)
	}
	got := stderr.String()
	want := "stagesub-admin: STAGESUB_TRUSTED_PROXIES: \"10.0.0.0/33\" is not a CIDR like 10.0.0.0/8 or an IP address\n"
	if got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
}
