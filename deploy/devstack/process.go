package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// service is a supervised child process: started in its own process group
// (so a terminal's Ctrl-C reaches only the dev stack, which then stops the
// children in order), output appended to a log file, restarted with backoff
// when it exits on its own unless restart is false, in which case its exit
// is reported on Exited.
type service struct {
	name    string
	bin     string
	args    []string
	env     []string
	logPath string
	restart bool
	stopSig syscall.Signal
	cred    *syscall.Credential
	log     *slog.Logger

	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	exited  chan struct{} // closed when a non-restarting service exits
	done    chan struct{} // closed when the supervisor goroutine returns
	stop    chan struct{}
}

func (s *service) start() error {
	s.exited = make(chan struct{})
	s.done = make(chan struct{})
	s.stop = make(chan struct{})
	if s.stopSig == 0 {
		s.stopSig = syscall.SIGTERM
	}
	cmd, wait, err := s.spawn()
	if err != nil {
		return err
	}
	go s.supervise(cmd, wait)
	return nil
}

func (s *service) spawn() (*exec.Cmd, <-chan error, error) {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("devstack: %s log: %w", s.name, err)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: children die with the dev stack even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: s.cred}
	if s.stopSig == syscall.SIGINT {
		// postgres: SIGQUIT on parent death is an immediate shutdown.
		cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("devstack: start %s: %w", s.name, err)
	}
	wait := make(chan error, 1)
	go func() {
		wait <- cmd.Wait()
		logf.Close()
	}()
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	return cmd, wait, nil
}

func (s *service) supervise(cmd *exec.Cmd, wait <-chan error) {
	defer close(s.done)
	backoff := 200 * time.Millisecond
	for {
		started := time.Now()
		select {
		case <-s.stop:
			s.terminate(cmd, wait)
			return
		case err := <-wait:
			if !s.restart {
				s.log.Error("process exited", "service", s.name, "err", err, "log", s.logPath)
				close(s.exited)
				return
			}
			if time.Since(started) > 30*time.Second {
				backoff = 200 * time.Millisecond
			}
			s.log.Warn("process exited; restarting", "service", s.name, "err", err, "in", backoff, "log", s.logPath)
			select {
			case <-s.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
			var serr error
			cmd, wait, serr = s.spawn()
			for serr != nil {
				s.log.Error("restart failed", "service", s.name, "err", serr)
				select {
				case <-s.stop:
					return
				case <-time.After(backoff):
				}
				cmd, wait, serr = s.spawn()
			}
		}
	}
}

// terminate sends the stop signal, then SIGKILL to the group after 15s.
func (s *service) terminate(cmd *exec.Cmd, wait <-chan error) {
	_ = cmd.Process.Signal(s.stopSig)
	select {
	case <-wait:
	case <-time.After(15 * time.Second):
		s.log.Warn("process did not stop; killing it", "service", s.name)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-wait
	}
}

// Stop stops the service and waits for it; safe to call twice.
func (s *service) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped || s.done == nil {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	close(s.stop)
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("devstack: stop %s: %w", s.name, ctx.Err())
	}
}

// Exited is closed when a service started with restart false has exited.
func (s *service) Exited() <-chan struct{} { return s.exited }

// waitFor polls check every 100ms until it returns nil, the context ends,
// or the service exits (restart false) or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, exited <-chan struct{}, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	for {
		if err = check(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("devstack: %s not ready after %s: %w", what, timeout, err)
			}
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("devstack: %s exited while starting: %w", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
