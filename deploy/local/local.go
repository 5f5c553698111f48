// Package local is the deploy target that runs tenant app instances as child
// processes of the current process and restarts them when they crash. The
// dev stack uses it; stagesubctl uses it for --start on a developer machine.
//
// Each tenant has at most one process. Its stdout and stderr are appended to
// <LogDir>/<slug>.log and its PID is written to <LogDir>/<slug>.pid, so a
// later process (another stagesubctl run) can still Stop it and see its
// Status after this one exited. Children run in their own process group.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/registry"
)

// Config configures a Target.
type Config struct {
	Binary     string   // app binary; default "stagesub-app" from PATH
	Args       []string // extra arguments, e.g. {"--migrate"}
	LogDir     string   // required: <slug>.log and <slug>.pid live here
	BaseEnv    []string // environment every process starts from; nil = os.Environ()
	MinBackoff time.Duration
	MaxBackoff time.Duration // restart backoff after a crash: default 200ms doubling to 10s
	// StableAfter resets the backoff once a process ran this long; default 30s.
	StableAfter time.Duration
	// MaxRestarts gives up (StateFailed) after this many consecutive
	// restarts of processes that did not become stable; default 50.
	MaxRestarts int
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL;
	// default 5s.
	StopTimeout time.Duration
	Logger      *slog.Logger
}

// Target supervises local app processes. Safe for concurrent use.
type Target struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	procs  map[string]*proc
	closed bool
}

var _ deploy.Target = (*Target)(nil)

// proc is one supervised tenant process; its fields after spec are guarded
// by mu.
type proc struct {
	spec deploy.AppSpec
	stop chan struct{} // closed by Stop
	done chan struct{} // closed when the supervisor goroutine returns

	mu       sync.Mutex
	state    deploy.State
	pid      int
	restarts int
	since    time.Time
	detail   string
}

// New returns a Target.
func New(cfg Config) (*Target, error) {
	if cfg.LogDir == "" {
		return nil, errors.New("local target: LogDir is required")
	}
	if cfg.Binary == "" {
		cfg.Binary = "stagesub-app"
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = 30 * time.Second
	}
	if cfg.MaxRestarts <= 0 {
		cfg.MaxRestarts = 50
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 5 * time.Second
	}
	if cfg.BaseEnv == nil {
		cfg.BaseEnv = os.Environ()
	}
	if err := os.MkdirAll(cfg.LogDir, 0o700); err != nil {
		return nil, fmt.Errorf("local target: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Target{cfg: cfg, log: log.With("target", "local"), procs: map[string]*proc{}}, nil
}

// Name returns "local".
func (t *Target) Name() string { return "local" }

// LogFile returns the log file of slug.
func (t *Target) LogFile(slug string) string { return filepath.Join(t.cfg.LogDir, slug+".log") }

func (t *Target) pidFile(slug string) string { return filepath.Join(t.cfg.LogDir, slug+".pid") }

// Start starts and supervises slug's process. It returns once the process
// has been started (not once it is healthy); an error when the binary cannot
// be started. Already supervised, or running from an earlier stagesubctl
// (PID file of a live process): nil.
func (t *Target) Start(ctx context.Context, spec deploy.AppSpec) error {
	if err := registry.ValidateSlug(spec.Tenant); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("local target: closed")
	}
	if p, ok := t.procs[spec.Tenant]; ok {
		select {
		case <-p.done:
		default:
			return nil
		}
	}
	if pid := t.livePID(spec.Tenant); pid != 0 {
		return nil
	}
	p := &proc{spec: spec, stop: make(chan struct{}), done: make(chan struct{}), state: deploy.StateStarting, since: time.Now()}
	cmd, wait, err := t.spawn(p)
	if err != nil {
		return err
	}
	t.procs[spec.Tenant] = p
	go t.supervise(p, cmd, wait)
	return nil
}

// spawn starts one process of p and returns a channel that yields its exit.
func (t *Target) spawn(p *proc) (*exec.Cmd, <-chan error, error) {
	slug := p.spec.Tenant
	env := append([]string(nil), t.cfg.BaseEnv...)
	if p.spec.EnvFile != "" {
		fileEnv, err := secrets.ReadFile(p.spec.EnvFile)
		if err != nil {
			return nil, nil, fmt.Errorf("local target: %s: %w", slug, err)
		}
		env = append(env, secrets.Environ(fileEnv)...)
	}
	env = append(env, p.spec.Env...)
	logf, err := os.OpenFile(t.LogFile(slug), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("local target: %w", err)
	}
	cmd := exec.Command(t.cfg.Binary, t.cfg.Args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("local target: start %s for %s: %w", t.cfg.Binary, slug, err)
	}
	logf.Close() // the child holds its own descriptor
	_ = os.WriteFile(t.pidFile(slug), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600)
	p.mu.Lock()
	p.state, p.pid, p.since, p.detail = deploy.StateRunning, cmd.Process.Pid, time.Now(), ""
	p.mu.Unlock()
	t.log.Info("started", "tenant", slug, "pid", cmd.Process.Pid)
	wait := make(chan error, 1)
	go func() { wait <- cmd.Wait() }()
	return cmd, wait, nil
}

// supervise waits for p's process, restarts it with backoff after a crash,
// and stops it when p.stop closes. The loop ends on stop or after
// MaxRestarts unstable restarts.
func (t *Target) supervise(p *proc, cmd *exec.Cmd, wait <-chan error) {
	defer close(p.done)
	slug := p.spec.Tenant
	backoff := t.cfg.MinBackoff
	unstable := 0
	for {
		started := time.Now()
		var err error
		select {
		case err = <-wait:
		case <-p.stop:
			t.terminate(cmd, wait)
			_ = os.Remove(t.pidFile(slug))
			p.set(deploy.StateStopped, 0, "stopped")
			return
		}
		detail := "exited"
		if err != nil {
			detail = err.Error()
		}
		t.log.Warn("exited", "tenant", slug, "pid", cmd.Process.Pid, "err", err)
		if time.Since(started) >= t.cfg.StableAfter {
			backoff, unstable = t.cfg.MinBackoff, 0
		}
		unstable++
		if unstable > t.cfg.MaxRestarts {
			_ = os.Remove(t.pidFile(slug))
			p.set(deploy.StateFailed, 0, fmt.Sprintf("gave up after %d restarts: %s", t.cfg.MaxRestarts, detail))
			return
		}
		p.set(deploy.StateStarting, 0, detail)
		select {
		case <-time.After(backoff):
		case <-p.stop:
			_ = os.Remove(t.pidFile(slug))
			p.set(deploy.StateStopped, 0, "stopped")
			return
		}
		backoff = min(2*backoff, t.cfg.MaxBackoff)
		p.mu.Lock()
		p.restarts++
		p.mu.Unlock()
		var serr error
		cmd, wait, serr = t.spawn(p)
		if serr != nil {
			t.log.Error("restart failed", "tenant", slug, "err", serr)
			// Treat as an immediate exit: a stand-in wait channel.
			ch := make(chan error, 1)
			ch <- serr
			wait, cmd = ch, &exec.Cmd{Process: &os.Process{Pid: 0}}
		}
	}
}

// terminate sends SIGTERM to the process group, SIGKILL after StopTimeout,
// and waits for the exit.
func (t *Target) terminate(cmd *exec.Cmd, wait <-chan error) {
	pid := cmd.Process.Pid
	if pid <= 0 {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-wait:
	case <-time.After(t.cfg.StopTimeout):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-wait
	}
}

func (p *proc) set(s deploy.State, pid int, detail string) {
	p.mu.Lock()
	p.state, p.pid, p.detail, p.since = s, pid, detail, time.Now()
	p.mu.Unlock()
}

// Stop stops slug's process and waits for it to exit. A process started by
// an earlier stagesubctl is stopped through its PID file.
func (t *Target) Stop(ctx context.Context, slug string) error {
	t.mu.Lock()
	p, ok := t.procs[slug]
	if ok {
		delete(t.procs, slug)
	}
	t.mu.Unlock()
	if ok {
		close(p.stop)
		select {
		case <-p.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	pid := t.livePID(slug)
	if pid == 0 {
		return nil
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(t.cfg.StopTimeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	_ = os.Remove(t.pidFile(slug))
	return nil
}

// Status reports slug's process.
func (t *Target) Status(ctx context.Context, slug string) (deploy.InstanceStatus, error) {
	t.mu.Lock()
	p, ok := t.procs[slug]
	t.mu.Unlock()
	if ok {
		p.mu.Lock()
		defer p.mu.Unlock()
		return deploy.InstanceStatus{Tenant: slug, State: p.state, PID: p.pid, Restarts: p.restarts, Since: p.since, Detail: p.detail}, nil
	}
	if pid := t.livePID(slug); pid != 0 {
		return deploy.InstanceStatus{Tenant: slug, State: deploy.StateRunning, PID: pid, Detail: "unsupervised (started by an earlier run)"}, nil
	}
	return deploy.InstanceStatus{Tenant: slug, State: deploy.StateStopped}, nil
}

// Close stops every supervised process.
func (t *Target) Close(ctx context.Context) error {
	t.mu.Lock()
	t.closed = true
	var slugs []string
	for s := range t.procs {
		slugs = append(slugs, s)
	}
	t.mu.Unlock()
	var errs []error
	for _, s := range slugs {
		errs = append(errs, t.Stop(ctx, s))
	}
	return errors.Join(errs...)
}

// livePID returns the PID in slug's PID file when that process is alive and
// runs this target's binary, else 0.
func (t *Target) livePID(slug string) int {
	b, err := os.ReadFile(t.pidFile(slug))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !alive(pid) {
		return 0
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
		if filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != filepath.Base(t.cfg.Binary) {
			return 0 // the PID was reused by another program
		}
	}
	return pid
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie (exited, not yet reaped) counts as gone.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}
