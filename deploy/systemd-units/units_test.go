package systemdunits_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	systemdunits "stagesub.dev/deploy/systemd-units"
	"stagesub.dev/internal/needbin"
)

// TestVerify runs `systemd-analyze verify` on every unit, the template as
// instance stagesub-app@goteborg. The binaries are looked up under a temp
// prefix instead of /usr/local/bin (verify checks that ExecStart exists);
// any output at all (unknown keys, bad values) fails the test.
func TestVerify(t *testing.T) {
	analyze := needbin.Path(t, "systemd-analyze", "apt-get install systemd")
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"stagesub-router", "stagesub-admin", "stagesub-app"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var paths []string
	for _, name := range systemdunits.Names {
		b, err := systemdunits.Unit(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("ExecStart=/usr/local/bin/")) {
			t.Fatalf("%s: ExecStart not under /usr/local/bin", name)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/"), []byte(bin+"/"))
		if name == "stagesub-app@.service" {
			name = "stagesub-app@goteborg.service"
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, paths...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSandbox checks the hardening every unit must keep.
func TestSandbox(t *testing.T) {
	required := []string{
		"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
		"PrivateTmp=yes", "PrivateDevices=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes", "Restart=always",
	}
	for _, name := range systemdunits.Names {
		b, err := systemdunits.Unit(name)
		if err != nil {
			t.Fatal(err)
		}
		lines := map[string]bool{}
		for _, l := range strings.Split(string(b), "\n") {
			lines[strings.TrimSpace(l)] = true
		}
		for _, r := range required {
			if !lines[r] {
				t.Errorf("%s: missing %q", name, r)
			}
		}
		wantCaps := "CapabilityBoundingSet="
		if name == "stagesub-router.service" {
			wantCaps = "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"
		}
		if !lines[wantCaps] {
			t.Errorf("%s: missing %q", name, wantCaps)
		}
	}
	app, _ := systemdunits.Unit("stagesub-app@.service")
	if !bytes.Contains(app, []byte("EnvironmentFile=/etc/stagesub/tenants/%i.env")) {
		t.Error("stagesub-app@.service: no per-tenant EnvironmentFile")
	}
}
