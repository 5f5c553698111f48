package devstack

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"stagesub.dev/app/password"
	"stagesub.dev/app/schema"
	"stagesub.dev/deploy"
	"stagesub.dev/deploy/local"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/registry"
)

// stack is one running dev stack; its services are stopped in reverse order.
type stack struct {
	o       Options
	log     *slog.Logger
	base    []string // children's base environment
	pg      *pgCluster
	secrets devSecrets

	consulAddr string
	caFile     string

	services []*service
	target   *local.Target
}

func runStack(ctx context.Context, o Options, environ []string, stdout, stderr io.Writer) (err error) {
	if err := os.MkdirAll(o.logDir(), 0o755); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	if pid := o.runningPID(); pid != 0 && pid != os.Getpid() {
		return fmt.Errorf("devstack: a dev stack is already running on %s (pid %d); stop it with: scripts/dev stop", o.Dir, pid)
	}
	if err := os.WriteFile(o.pidFile(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s := &stack{o: o, log: newLogger(stderr), base: childEnv(environ)}
	defer func() {
		_ = os.Remove(o.readyFile())
		s.shutdown()
		_ = os.Remove(o.pidFile())
		if err == nil || errors.Is(err, context.Canceled) {
			fmt.Fprintln(stdout, "dev stack stopped")
			err = nil
		}
	}()
	if s.secrets, err = loadSecrets(o.Dir); err != nil {
		return err
	}
	start := time.Now()
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"postgres", s.startPostgres},
		{"consul", s.startConsul},
		{"tenants", s.provision},
		{"apps", s.startApps},
		{"admin", s.startAdmin},
		{"router", s.startRouter},
		{"ready", s.waitReady},
	}
	for _, st := range steps {
		if err := st.f(ctx); err != nil {
			return err
		}
		s.log.Info("dev stack: step done", "step", st.name, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	summary := s.summary()
	if err := s.writeEnv(); err != nil {
		return err
	}
	fmt.Fprint(stdout, summary)
	if err := os.WriteFile(o.readyFile(), []byte(summary), 0o644); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	fmt.Fprintln(stdout, "\nPress Ctrl-C to stop everything.")
	// Run until interrupted, or until a service that is not restarted dies.
	select {
	case <-ctx.Done():
		return nil
	case <-s.services[0].Exited():
		return fmt.Errorf("devstack: postgres exited; see %s", s.pg.logPath())
	}
}

// shutdown stops the router, admin, apps, Consul and Postgres, in that order.
func (s *stack) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := len(s.services) - 1; i >= 0; i-- {
		svc := s.services[i]
		if svc.name == "consul" && s.target != nil {
			// Apps deregister from Consul on the way out: stop them first.
			if err := s.target.Close(ctx); err != nil {
				s.log.Warn("stop apps", "err", err)
			}
			s.target = nil
		}
		if err := svc.Stop(ctx); err != nil {
			s.log.Warn("stop", "service", svc.name, "err", err)
		}
	}
	if s.target != nil {
		_ = s.target.Close(ctx)
	}
}

func (s *stack) add(svc *service) error {
	svc.log = s.log
	if err := svc.start(); err != nil {
		return err
	}
	s.services = append(s.services, svc)
	return nil
}

func (s *stack) startPostgres(ctx context.Context) error {
	pg, err := newPGCluster(filepath.Join(s.o.Dir, "pg"))
	if err != nil {
		return err
	}
	if err := pg.init(); err != nil {
		return err
	}
	s.pg = pg
	svc := pg.service(&service{})
	if err := s.add(svc); err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "postgres", svc.Exited(), pg.ping)
}

func (s *stack) startConsul(ctx context.Context) error {
	s.consulAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.o.ConsulPort))
	svc := &service{name: "consul", env: s.base, logPath: filepath.Join(s.o.logDir(), "consul.log"), restart: true}
	if real, err := exec.LookPath("consul"); err == nil {
		svc.bin = real
		svc.args = []string{"agent", "-dev", "-client=127.0.0.1", "-http-port=" + strconv.Itoa(s.o.ConsulPort)}
		s.log.Info("using the real consul binary", "path", real)
	} else {
		bin, err := s.o.binary("stagesub-consul")
		if err != nil {
			return err
		}
		svc.bin = bin
		svc.args = []string{"agent", "-dev", "-client=127.0.0.1", "-http-port=" + strconv.Itoa(s.o.ConsulPort),
			"-data-dir=" + filepath.Join(s.o.Dir, "consul")}
	}
	if err := s.add(svc); err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	return waitFor(ctx, 30*time.Second, "consul", nil, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.consulAddr+"/v1/status/leader", nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(bytes.Trim(b, "\"\n ")) == 0 {
			return fmt.Errorf("status %d, leader %q", resp.StatusCode, b)
		}
		return nil
	})
}

func (s *stack) secretsDir() string { return filepath.Join(s.o.Dir, "tenants") }

// ctlEnv is the environment of stagesubctl runs against the stack.
func (s *stack) ctlEnv() []string {
	return append(append([]string(nil), s.base...),
		registry.EnvConsulAddr+"="+s.consulAddr,
		EnvPGAdminURL+"="+s.pg.AdminURL(),
		EnvSecretsDir+"="+s.secretsDir(),
		"STAGESUB_STATS_PASSWORD="+s.secrets.StatsPassword,
		registry.EnvBaseDomain+"="+s.o.BaseDomain,
		"STAGESUB_PUBLIC_URL="+s.publicURL("{slug}"),
	)
}

func (s *stack) publicURL(host string) string {
	_, port, _ := net.SplitHostPort(s.o.HTTPSAddr)
	if port == "443" {
		return "https://" + host + "." + s.o.BaseDomain + "/"
	}
	return "https://" + host + "." + s.o.BaseDomain + ":" + port + "/"
}

// ctl runs stagesubctl with args and returns its output.
func (s *stack) ctl(ctx context.Context, args ...string) (string, error) {
	bin, err := s.o.binary("stagesubctl")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = s.ctlEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("stagesubctl %s: %w\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String(), nil
}

// provision creates the demo tenants that do not exist (or finishes
// half-created ones), then seeds each and ensures its staff login.
func (s *stack) provision(ctx context.Context) error {
	dir := secrets.Dir{Path: s.secretsDir()}
	for _, t := range DemoTenants {
		status := ""
		if out, err := s.ctl(ctx, "tenant", "show", t.Slug, "--json"); err == nil {
			var rec struct {
				Status string `json:"status"`
			}
			_ = json.Unmarshal([]byte(out), &rec)
			status = rec.Status
			if status == "" {
				status = "unknown"
			}
		}
		if status == "" || status == string(registry.StatusProvisioning) {
			if _, err := s.ctl(ctx, "tenant", "create", t.Slug, "--name", t.Name); err != nil {
				return err
			}
			s.log.Info("tenant created", "tenant", t.Slug)
		} else {
			s.log.Info("tenant exists; keeping its data", "tenant", t.Slug, "status", status)
		}
		env, err := dir.Read(t.Slug)
		if err != nil {
			return fmt.Errorf("devstack: tenant %s env file: %w", t.Slug, err)
		}
		if err := seed(ctx, env[registry.EnvDatabaseURL], t, s.secrets.StaffPassword); err != nil {
			return err
		}
	}
	return nil
}

// StaffEmail is the staff login of a demo tenant.
func StaffEmail(slug string) string { return "admin@" + slug + ".example.org" }

func seed(ctx context.Context, url string, t Tenant, staffPassword string) error {
	db, err := postgres.OpenTenant(ctx, url)
	if err != nil {
		return fmt.Errorf("devstack: tenant %s: %w", t.Slug, err)
	}
	defer db.Close()
	if err := schema.SeedDemo(ctx, db, schema.SeedOptions{}); err != nil {
		return fmt.Errorf("devstack: seed %s: %w", t.Slug, err)
	}
	if _, err := schema.CreateStaffAdmin(ctx, db, StaffEmail(t.Slug), staffPassword); err != nil {
		return fmt.Errorf("devstack: staff login of %s: %w", t.Slug, err)
	}
	return nil
}

func (s *stack) startApps(ctx context.Context) error {
	bin, err := s.o.binary("stagesub-app")
	if err != nil {
		return err
	}
	target, err := local.New(local.Config{Binary: bin, LogDir: s.o.logDir(), BaseEnv: s.base, Logger: s.log})
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s.target = target
	dir := secrets.Dir{Path: s.secretsDir()}
	for _, t := range DemoTenants {
		spec := deploy.AppSpec{Tenant: t.Slug, EnvFile: dir.File(t.Slug), Env: []string{
			registry.EnvConsulAddr + "=" + s.consulAddr,
			registry.EnvBaseDomain + "=" + s.o.BaseDomain,
			"STAGESUB_LISTEN=127.0.0.1:0",
		}}
		if err := target.Start(ctx, spec); err != nil {
			return fmt.Errorf("devstack: start app %s: %w", t.Slug, err)
		}
	}
	return nil
}

func (s *stack) startAdmin(ctx context.Context) error {
	bin, err := s.o.binary("stagesub-admin")
	if err != nil {
		return err
	}
	hash, err := password.Hash(s.secrets.AdminPassword)
	if err != nil {
		return err
	}
	env := append(append([]string(nil), s.base...),
		registry.EnvConsulAddr+"="+s.consulAddr,
		registry.EnvBaseDomain+"="+s.o.BaseDomain,
		"STAGESUB_LISTEN=127.0.0.1:0",
		"STAGESUB_ADMIN_USER=admin",
		"STAGESUB_ADMIN_PASSWORD_HASH="+hash,
		"STAGESUB_STATS_PASSWORD="+s.secrets.StatsPassword,
		"STAGESUB_SESSION_KEY="+s.secrets.SessionKey,
		"STAGESUB_PANEL_URL="+s.publicURL("{slug}"),
	)
	return s.add(&service{name: "admin", bin: bin, env: env, logPath: filepath.Join(s.o.logDir(), "admin.log"), restart: true})
}

func (s *stack) startRouter(ctx context.Context) error {
	bin, err := s.o.binary("stagesub-router")
	if err != nil {
		return err
	}
	stateDir := filepath.Join(s.o.Dir, "router")
	tlsDir := filepath.Join(s.o.Dir, "ca")
	for _, d := range []string{stateDir, tlsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
	}
	s.caFile = filepath.Join(tlsDir, RouterCAFile)
	env := append(append([]string(nil), s.base...), RouterEnv(RouterConfig{
		ConsulAddr: s.consulAddr, BaseDomain: s.o.BaseDomain, HTTPAddr: s.o.HTTPAddr,
		HTTPSAddr: s.o.HTTPSAddr, AdminAddr: s.o.RouterAdminAddr, StateDir: stateDir, TLSDir: tlsDir,
	})...)
	return s.add(&service{name: "router", bin: bin, env: env, logPath: filepath.Join(s.o.logDir(), "router.log"), restart: true})
}

// waitReady waits until the CA file exists and every tenant and the admin
// answer through the router over HTTPS.
func (s *stack) waitReady(ctx context.Context) error {
	var pool *x509.CertPool
	err := waitFor(ctx, s.o.Timeout, "router CA "+s.caFile, nil, func(context.Context) error {
		b, err := os.ReadFile(s.caFile)
		if err != nil {
			return err
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("no certificate in %s", s.caFile)
		}
		return nil
	})
	if err != nil {
		return err
	}
	client := routerClient(s.o.HTTPSAddr, pool)
	hosts := []string{"admin"}
	for _, t := range DemoTenants {
		hosts = append(hosts, t.Slug)
	}
	for _, h := range hosts {
		url := s.publicURL(h) + "healthz"
		err := waitFor(ctx, s.o.Timeout, url, nil, func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: status %d", url, resp.StatusCode)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%w (logs in %s)", err, s.o.logDir())
		}
	}
	return nil
}

// routerClient sends every request to the router's HTTPS address (Go does
// not resolve *.localhost) and trusts only the dev CA.
func routerClient(httpsAddr string, pool *x509.CertPool) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, httpsAddr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// writeEnv writes <dir>/env: shell exports for stagesubctl and curl.
func (s *stack) writeEnv() error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# StageSub dev stack environment; load with: . %s\n", filepath.Join(s.o.Dir, "env"))
	for _, kv := range [][2]string{
		{registry.EnvConsulAddr, s.consulAddr},
		{EnvPGAdminURL, s.pg.AdminURL()},
		{EnvSecretsDir, s.secretsDir()},
		{registry.EnvBaseDomain, s.o.BaseDomain},
		{EnvCAFile, s.caFile},
		{EnvAdminUser, "admin"},
		{EnvAdminPassword, s.secrets.AdminPassword},
		{"STAGESUB_STATS_PASSWORD", s.secrets.StatsPassword},
		{"STAGESUB_PUBLIC_URL", s.publicURL("{slug}")},
		{"STAGESUB_TARGET", "local"},
		{"STAGESUB_APP_BIN", filepath.Join(s.o.BinDir, "stagesub-app")},
		{"STAGESUB_LOG_DIR", s.o.logDir()},
		// stagesubctl doctor checks routing and the certificate here.
		{"STAGESUB_ROUTER_URL", "https://" + s.o.HTTPSAddr},
	} {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	if err := os.WriteFile(filepath.Join(s.o.Dir, "env"), b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	return nil
}

func shellQuote(v string) string { return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'" }

func (s *stack) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nStageSub dev stack is ready.\n\n")
	fmt.Fprintf(&b, "  %-26s %-36s user admin, password %s\n", "Admin dashboard", s.publicURL("admin"), s.secrets.AdminPassword)
	for _, t := range DemoTenants {
		fmt.Fprintf(&b, "  %-26s %-36s %s, password %s\n", t.Name, s.publicURL(t.Slug), StaffEmail(t.Slug), s.secrets.StaffPassword)
	}
	_, httpPort, _ := net.SplitHostPort(s.o.HTTPAddr)
	row := func(k, v string) { fmt.Fprintf(&b, "  %-26s %s\n", k, v) }
	b.WriteString("\n")
	row("Plain HTTP", fmt.Sprintf("http://goteborg.%s:%s/ (redirects to HTTPS)", s.o.BaseDomain, httpPort))
	row("CA certificate", s.caFile)
	row("", fmt.Sprintf("curl --cacert %s %s", s.caFile, s.publicURL("goteborg")))
	row("", "browsers: import it as a trusted authority (Chromium/Linux:")
	row("", fmt.Sprintf("certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n stagesub-dev -i %s)", s.caFile))
	row("Consul", fmt.Sprintf("http://%s/v1/catalog/services", s.consulAddr))
	row("Logs", s.o.logDir())
	row("Ops shell", fmt.Sprintf(". %s && %s tenant list", filepath.Join(s.o.Dir, "env"), filepath.Join(s.o.BinDir, "stagesubctl")))
	return b.String()
}
