// Package ctl is stagesubctl: configuration from the environment, the
// command dispatch table (commands.go) and one file per command. main()
// only calls Main.Exec, so tests run commands in-process.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/consullock"
	"stagesub.dev/deploy/local"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/deploy/systemd"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
)

// Environment variables read by stagesubctl (besides CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN and STAGESUB_BASE_DOMAIN).
const (
	EnvPGAdminURL    = "STAGESUB_PG_ADMIN_URL"   // default server; STAGESUB_PG_ADMIN_URL_<NAME> for named ones
	EnvSecretsDir    = "STAGESUB_SECRETS_DIR"    // env files <dir>/<slug>.env
	EnvStatsPassword = "STAGESUB_STATS_PASSWORD" // password of role stagesub_stats (set on create when given)
	EnvTarget        = "STAGESUB_TARGET"         // deploy target for --start: systemd (default) or local
	EnvAppBinary     = "STAGESUB_APP_BIN"        // local target: app binary (default stagesub-app)
	EnvLogDir        = "STAGESUB_LOG_DIR"        // local target: logs and PID files (default <secrets dir>/../logs)
	EnvPublicURL     = "STAGESUB_PUBLIC_URL"     // URL pattern of a tenant, "{slug}" replaced; default from the base domain
	EnvLogLevel      = "STAGESUB_LOG_LEVEL"      // debug, info, warn (default), error
)

// Version is the build version, printed by `stagesubctl version`.
var Version = "dev"

// DefaultServer names the server of STAGESUB_PG_ADMIN_URL.
const DefaultServer = "default"

// Config is stagesubctl's configuration, read from the environment by Load.
type Config struct {
	ConsulAddr    string
	ConsulToken   string
	PGAdminURLs   map[string]string // server name → admin URL
	SecretsDir    string
	BaseDomain    string
	PublicURL     string
	StatsPassword string
	Target        string
	AppBinary     string
	LogDir        string
	Environ       []string // the whole environment, for targets
}

// UsageError is a command-line mistake: exit code 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// ExitError carries an exit code without further message (the command has
// printed its report, e.g. migrate with failures).
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Main is one stagesubctl invocation: Load, then Run, then Close.
type Main struct {
	Stdout, Stderr io.Writer
	Config         Config
	Logger         *slog.Logger
	// Terminal reports whether w is a terminal (progress bar or plain
	// lines); nil detects it on *os.File.
	Terminal func(w io.Writer) bool

	cmd  *Command
	args []string

	consul  *api.Client
	store   registry.TenantStore
	servers map[string]*postgres.Server
	target  deploy.Target
	closers []func()
}

// Exec runs args with environ and returns the exit code: 0 success, 1 any
// failure (reported on Stderr), 2 usage.
func (m *Main) Exec(ctx context.Context, args, environ []string) int {
	defer m.Close()
	err := m.Load(args, environ)
	if err == nil {
		err = m.Run(ctx)
	}
	return m.report(err)
}

func (m *Main) report(err error) int {
	var ue *UsageError
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case errors.As(err, &ue):
		fmt.Fprintf(m.Stderr, "stagesubctl: %v\n\n", err)
		m.usage(m.Stderr)
		return 2
	}
	fmt.Fprintf(m.Stderr, "stagesubctl: error: %v\n", err)
	return 1
}

// Load reads the configuration from environ and picks the command of args.
// It connects to nothing.
func (m *Main) Load(args, environ []string) error {
	if m.Stdout == nil {
		m.Stdout = io.Discard
	}
	if m.Stderr == nil {
		m.Stderr = io.Discard
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	c := Config{
		ConsulAddr:    env[registry.EnvConsulAddr],
		ConsulToken:   env[registry.EnvConsulToken],
		PGAdminURLs:   map[string]string{},
		SecretsDir:    env[EnvSecretsDir],
		BaseDomain:    env[registry.EnvBaseDomain],
		PublicURL:     env[EnvPublicURL],
		StatsPassword: env[EnvStatsPassword],
		Target:        env[EnvTarget],
		AppBinary:     env[EnvAppBinary],
		LogDir:        env[EnvLogDir],
		Environ:       environ,
	}
	if c.ConsulAddr == "" {
		c.ConsulAddr = "127.0.0.1:8500"
	}
	if c.BaseDomain == "" {
		c.BaseDomain = "localhost"
	}
	if c.Target == "" {
		c.Target = "systemd"
	}
	for k, v := range env {
		switch {
		case k == EnvPGAdminURL:
			c.PGAdminURLs[DefaultServer] = v
		case strings.HasPrefix(k, EnvPGAdminURL+"_") && v != "":
			c.PGAdminURLs[strings.ToLower(strings.TrimPrefix(k, EnvPGAdminURL+"_"))] = v
		}
	}
	if c.LogDir == "" && c.SecretsDir != "" {
		c.LogDir = filepath.Join(filepath.Dir(filepath.Clean(c.SecretsDir)), "logs")
	}
	m.Config = c
	if m.Logger == nil {
		level := slog.LevelWarn
		_ = level.UnmarshalText([]byte(env[EnvLogLevel]))
		m.Logger = slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: level}))
	}

	cmd, rest := lookup(args)
	if cmd == nil {
		if len(args) == 0 {
			return &UsageError{Msg: "no command given"}
		}
		return &UsageError{Msg: fmt.Sprintf("unknown command %q", strings.Join(args[:min(2, len(args))], " "))}
	}
	m.cmd, m.args = cmd, rest
	return nil
}

// Run runs the loaded command.
func (m *Main) Run(ctx context.Context) error {
	if m.cmd == nil {
		return &UsageError{Msg: "no command loaded"}
	}
	return m.cmd.Run(ctx, m, m.args)
}

// Close releases connections opened by the command.
func (m *Main) Close() error {
	for i := len(m.closers) - 1; i >= 0; i-- {
		m.closers[i]()
	}
	m.closers = nil
	return nil
}

// lookup finds the command whose name matches the longest prefix of args.
func lookup(args []string) (*Command, []string) {
	var best *Command
	n := 0
	for _, c := range commands {
		words := strings.Fields(c.Name)
		if len(words) <= len(args) && len(words) > n && strings.Join(args[:len(words)], " ") == c.Name {
			best, n = c, len(words)
		}
	}
	if best == nil {
		return nil, nil
	}
	return best, args[n:]
}

func (m *Main) usage(w io.Writer) {
	fmt.Fprintln(w, "usage: stagesubctl <command> [arguments]")
	fmt.Fprintln(w, "\ncommands:")
	cmds := append([]*Command(nil), commands...)
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].Name < cmds[j].Name })
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-58s %s\n", c.Usage, c.Summary)
	}
	fmt.Fprintln(w, "\nenvironment: STAGESUB_PG_ADMIN_URL[_<NAME>], CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,")
	fmt.Fprintln(w, "  STAGESUB_SECRETS_DIR, STAGESUB_BASE_DOMAIN, STAGESUB_STATS_PASSWORD, STAGESUB_TARGET")
}

// FlagSet returns a flag set for a command that reports to Stderr.
func (m *Main) FlagSet(c *Command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(m.Stderr, "usage: stagesubctl %s\n", c.Usage)
		fs.PrintDefaults()
	}
	return fs
}

// Parse parses args allowing flags between positional arguments and
// returns the positional ones. A flag error is a UsageError.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for range len(args) + 1 { // each round consumes at least one argument
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &UsageError{Msg: err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	return pos, nil
}

// parseSlug parses args of the command name that takes exactly one
// positional argument, a tenant slug, and returns the validated slug.
func parseSlug(fs *flag.FlagSet, name string, args []string) (string, error) {
	pos, err := Parse(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", &UsageError{Msg: name + ": want exactly one <slug>"}
	}
	if err := registry.ValidateSlug(pos[0]); err != nil {
		return "", err
	}
	return pos[0], nil
}

// Consul returns the Consul client (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN).
func (m *Main) Consul() (*api.Client, error) {
	if m.consul != nil {
		return m.consul, nil
	}
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = m.Config.ConsulAddr
	cfg.Token = m.Config.ConsulToken
	if u, err := url.Parse(m.Config.ConsulAddr); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		cfg.Address, cfg.Scheme = u.Host, u.Scheme
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul at %s: %w", m.Config.ConsulAddr, err)
	}
	m.consul = c
	return c, nil
}

// Store returns the tenant store in Consul.
func (m *Main) Store() (registry.TenantStore, error) {
	if m.store != nil {
		return m.store, nil
	}
	c, err := m.Consul()
	if err != nil {
		return nil, err
	}
	m.store = consul.NewStore(c)
	return m.store, nil
}

// Servers opens every configured Postgres server (without connecting).
func (m *Main) Servers(ctx context.Context) (map[string]*postgres.Server, error) {
	if m.servers != nil {
		return m.servers, nil
	}
	if len(m.Config.PGAdminURLs) == 0 {
		return nil, fmt.Errorf("no Postgres server configured: set %s", EnvPGAdminURL)
	}
	out := map[string]*postgres.Server{}
	for name, u := range m.Config.PGAdminURLs {
		s, err := postgres.Open(ctx, name, u)
		if err != nil {
			return nil, err
		}
		out[name] = s
		m.closers = append(m.closers, s.Close)
	}
	m.servers = out
	return out, nil
}

// Secrets returns the env-file sink of STAGESUB_SECRETS_DIR.
func (m *Main) Secrets() (deploy.Secrets, error) {
	if m.Config.SecretsDir == "" {
		return nil, fmt.Errorf("%s is not set (where tenant env files are written)", EnvSecretsDir)
	}
	return secrets.Dir{Path: m.Config.SecretsDir}, nil
}

// Target returns the deploy target of STAGESUB_TARGET.
func (m *Main) Target() (deploy.Target, error) {
	if m.target != nil {
		return m.target, nil
	}
	switch m.Config.Target {
	case "systemd":
		m.target = systemd.New(systemd.Config{Logger: m.Logger})
	case "local":
		if m.Config.LogDir == "" {
			return nil, fmt.Errorf("local target: set %s or %s", EnvLogDir, EnvSecretsDir)
		}
		t, err := local.New(local.Config{Binary: m.Config.AppBinary, LogDir: m.Config.LogDir, BaseEnv: m.Config.Environ, Logger: m.Logger})
		if err != nil {
			return nil, err
		}
		// No Close: processes started by a one-shot stagesubctl keep running
		// (own process group); later runs find them by PID file.
		m.target = t
	default:
		return nil, fmt.Errorf("%s=%q: want systemd or local", EnvTarget, m.Config.Target)
	}
	return m.target, nil
}

// Provisioner wires the provisioning domain to the adapters.
func (m *Main) Provisioner(ctx context.Context) (*deploy.Provisioner, error) {
	store, err := m.Store()
	if err != nil {
		return nil, err
	}
	c, _ := m.Consul()
	sec, err := m.Secrets()
	if err != nil {
		return nil, err
	}
	p := &deploy.Provisioner{
		Store:         store,
		Locker:        consullock.Locker{Client: c},
		Secrets:       sec,
		Servers:       map[string]deploy.DBServer{},
		DefaultServer: DefaultServer,
		OpenDB:        postgres.OpenTenant,
		StatsPassword: m.Config.StatsPassword,
		ConsulAddr:    m.Config.ConsulAddr,
		Logger:        m.Logger,
		AppEnv: []string{
			registry.EnvConsulAddr + "=" + m.Config.ConsulAddr,
			registry.EnvBaseDomain + "=" + m.Config.BaseDomain,
		},
	}
	if m.Config.ConsulToken != "" {
		p.AppEnv = append(p.AppEnv, registry.EnvConsulToken+"="+m.Config.ConsulToken)
	}
	servers, err := m.Servers(ctx)
	if err != nil {
		return nil, err
	}
	for n, s := range servers {
		p.Servers[n] = s
	}
	return p, nil
}

// TenantURL returns the public URL of slug.
func (m *Main) TenantURL(slug string) string {
	if m.Config.PublicURL != "" {
		return strings.ReplaceAll(m.Config.PublicURL, "{slug}", slug)
	}
	if m.Config.BaseDomain == "localhost" {
		return "http://" + slug + ".localhost:8080/"
	}
	return "https://" + slug + "." + m.Config.BaseDomain + "/"
}

// isTerminal reports whether w is a terminal.
func (m *Main) isTerminal(w io.Writer) bool {
	if m.Terminal != nil {
		return m.Terminal(w)
	}
	f, ok := w.(*os.File)
	return ok && termIsTerminal(int(f.Fd()))
}
