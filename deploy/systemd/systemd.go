// Package systemd is the deploy target for hosts where each tenant's app is
// the systemd template instance stagesub-app@<slug>.service, whose unit
// (deploy/systemd-units) reads EnvironmentFile=<secrets dir>/%i.env.
package systemd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"stagesub.dev/deploy"
	"stagesub.dev/registry"
)

// Config configures a Target.
type Config struct {
	// Systemctl is the systemctl binary; default "systemctl".
	Systemctl string
	// User runs systemctl --user.
	User bool
	// Unit is the template unit; default "stagesub-app@.service".
	Unit string
	// DropInDir, when set, receives a drop-in per instance holding
	// AppSpec.Env (<DropInDir>/<unit instance>.d/50-stagesubctl.conf),
	// e.g. /etc/systemd/system. Empty: AppSpec.Env is not passed (the unit's
	// own environment applies).
	DropInDir string
	Logger    *slog.Logger
}

// Target starts and stops systemd template instances.
type Target struct {
	cfg Config
	log *slog.Logger
}

var _ deploy.Target = (*Target)(nil)

// New returns a Target.
func New(cfg Config) *Target {
	if cfg.Systemctl == "" {
		cfg.Systemctl = "systemctl"
	}
	if cfg.Unit == "" {
		cfg.Unit = "stagesub-app@.service"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Target{cfg: cfg, log: log.With("target", "systemd")}
}

// Name returns "systemd".
func (t *Target) Name() string { return "systemd" }

// UnitName returns the instance unit of slug: "stagesub-app@<slug>.service".
func (t *Target) UnitName(slug string) string {
	return strings.Replace(t.cfg.Unit, "@.", "@"+slug+".", 1)
}

func (t *Target) systemctl(ctx context.Context, args ...string) (string, error) {
	if t.cfg.User {
		args = append([]string{"--user"}, args...)
	}
	cmd := exec.CommandContext(ctx, t.cfg.Systemctl, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("systemd target: %s %s: %w: %s", t.cfg.Systemctl, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Start writes the env drop-in (when configured) and runs
// `systemctl enable --now`, which is a no-op for a running instance.
func (t *Target) Start(ctx context.Context, spec deploy.AppSpec) error {
	if err := registry.ValidateSlug(spec.Tenant); err != nil {
		return err
	}
	unit := t.UnitName(spec.Tenant)
	if t.cfg.DropInDir != "" && len(spec.Env) > 0 {
		if err := t.writeDropIn(unit, spec.Env); err != nil {
			return err
		}
		if _, err := t.systemctl(ctx, "daemon-reload"); err != nil {
			return err
		}
	}
	_, err := t.systemctl(ctx, "enable", "--now", unit)
	return err
}

func (t *Target) writeDropIn(unit string, env []string) error {
	dir := filepath.Join(t.cfg.DropInDir, unit+".d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("systemd target: %w", err)
	}
	var b strings.Builder
	b.WriteString("# written by stagesubctl\n[Service]\n")
	for _, kv := range env {
		b.WriteString("Environment=" + strconv.Quote(kv) + "\n")
	}
	path := filepath.Join(dir, "50-stagesubctl.conf")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o640); err != nil {
		return fmt.Errorf("systemd target: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("systemd target: %w", err)
	}
	return nil
}

// Stop runs `systemctl disable --now`.
func (t *Target) Stop(ctx context.Context, slug string) error {
	if err := registry.ValidateSlug(slug); err != nil {
		return err
	}
	_, err := t.systemctl(ctx, "disable", "--now", t.UnitName(slug))
	return err
}

// Status maps `systemctl show` properties to an InstanceStatus.
func (t *Target) Status(ctx context.Context, slug string) (deploy.InstanceStatus, error) {
	st := deploy.InstanceStatus{Tenant: slug, State: deploy.StateStopped}
	if err := registry.ValidateSlug(slug); err != nil {
		return st, err
	}
	out, err := t.systemctl(ctx, "show", t.UnitName(slug), "--property=ActiveState,SubState,MainPID,NRestarts,StateChangeTimestamp")
	if err != nil {
		return st, err
	}
	props := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			props[k] = v
		}
	}
	switch props["ActiveState"] {
	case "active", "reloading":
		st.State = deploy.StateRunning
	case "activating":
		st.State = deploy.StateStarting
	case "failed":
		st.State = deploy.StateFailed
	}
	st.PID, _ = strconv.Atoi(props["MainPID"])
	st.Restarts, _ = strconv.Atoi(props["NRestarts"])
	if ts := props["StateChangeTimestamp"]; ts != "" {
		if tm, err := time.Parse("Mon 2006-01-02 15:04:05 MST", ts); err == nil {
			st.Since = tm
		}
	}
	st.Detail = props["ActiveState"] + "/" + props["SubState"]
	return st, nil
}
