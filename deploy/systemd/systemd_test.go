package systemd_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/systemd"
)

// fakeSystemctl writes a systemctl stand-in that logs its arguments and
// answers "show" with props.
func fakeSystemctl(t *testing.T, props string) (bin, logPath string) {
	t.Helper()
	dir := t.TempDir()
	logPath = filepath.Join(dir, "calls")
	bin = filepath.Join(dir, "systemctl")
	script := "#!/bin/sh\necho \"$*\" >> " + logPath + "\n" +
		"case \"$1 $2\" in *show*) printf '" + props + "' ;; esac\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, logPath
}

func TestStartStopStatus(t *testing.T) {
	bin, calls := fakeSystemctl(t, `ActiveState=active\nSubState=running\nMainPID=4242\nNRestarts=2\n`)
	dropIns := t.TempDir()
	tg := systemd.New(systemd.Config{Systemctl: bin, DropInDir: dropIns})
	ctx := context.Background()
	spec := deploy.AppSpec{Tenant: "goteborg", EnvFile: "/etc/stagesub/tenants/goteborg.env", Env: []string{"CONSUL_HTTP_ADDR=127.0.0.1:8500"}}
	if err := tg.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	st, err := tg.Status(ctx, "goteborg")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != deploy.StateRunning || st.PID != 4242 || st.Restarts != 2 {
		t.Errorf("status = %+v", st)
	}
	if err := tg.Stop(ctx, "goteborg"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(calls)
	want := "daemon-reload\nenable --now stagesub-app@goteborg.service\n" +
		"show stagesub-app@goteborg.service --property=ActiveState,SubState,MainPID,NRestarts,StateChangeTimestamp\n" +
		"disable --now stagesub-app@goteborg.service\n"
	if got := string(b); got != want {
		t.Errorf("systemctl calls:\n%s\nwant:\n%s", got, want)
	}
	dropIn, err := os.ReadFile(filepath.Join(dropIns, "stagesub-app@goteborg.service.d", "50-stagesubctl.conf"))
	if err != nil || !strings.Contains(string(dropIn), `Environment="CONSUL_HTTP_ADDR=127.0.0.1:8500"`) {
		t.Errorf("drop-in = %q, %v", dropIn, err)
	}
}

func TestStatusStates(t *testing.T) {
	tests := []struct {
		active string
		want   deploy.State
	}{
		{"active", deploy.StateRunning},
		{"activating", deploy.StateStarting},
		{"failed", deploy.StateFailed},
		{"inactive", deploy.StateStopped},
	}
	for _, tt := range tests {
		bin, _ := fakeSystemctl(t, "ActiveState="+tt.active+`\nMainPID=0\n`)
		st, err := systemd.New(systemd.Config{Systemctl: bin}).Status(context.Background(), "malmo")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := st.State, tt.want; got != want {
			t.Errorf("ActiveState=%s: got %s, want %s", tt.active, got, want)
		}
	}
}

func TestErrorsNameTheCommand(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "systemctl")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'Unit not found.' >&2\nexit 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := systemd.New(systemd.Config{Systemctl: bin, User: true}).Start(context.Background(), deploy.AppSpec{Tenant: "goteborg"})
	if err == nil || !strings.Contains(err.Error(), "--user enable --now stagesub-app@goteborg.service") || !strings.Contains(err.Error(), "Unit not found.") {
		t.Errorf("err = %v", err)
	}
	if err := systemd.New(systemd.Config{Systemctl: bin}).Stop(context.Background(), "Bad Slug"); err == nil {
		t.Errorf("Stop with an invalid slug succeeded")
	}
}
