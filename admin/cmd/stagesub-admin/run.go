package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"stagesub.dev/admin"
	"stagesub.dev/admin/http"
	"stagesub.dev/admin/password"
	"stagesub.dev/admin/postgres"
	"stagesub.dev/admin/prometheus"
	"stagesub.dev/app/loginlimit"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
)

// Environment variables read by stagesub-admin (besides registry's
// CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN and STAGESUB_BASE_DOMAIN).
const (
	EnvListen            = "STAGESUB_LISTEN"                 // default 127.0.0.1:0
	EnvAdvertise         = "STAGESUB_ADVERTISE"              // host:port registered in Consul; default the listen address
	EnvRegister          = "STAGESUB_REGISTER"               // "0"/"false": do not register in Consul
	EnvAdminUser         = "STAGESUB_ADMIN_USER"             // required
	EnvAdminPasswordHash = "STAGESUB_ADMIN_PASSWORD_HASH"    // required: argon2id or bcrypt
	EnvSessionKey        = "STAGESUB_SESSION_KEY"            // >= 32 bytes, hex or base64; random when empty
	EnvStatsPassword     = "STAGESUB_STATS_PASSWORD"         // password of role stagesub_stats
	EnvStatsDSN          = "STAGESUB_STATS_DSN"              // base DSN: sslmode, default host/port ...
	EnvStatsConcurrency  = "STAGESUB_STATS_CONCURRENCY"      // default 16
	EnvStatsTimeout      = "STAGESUB_STATS_TIMEOUT"          // per tenant, default 2s
	EnvStatsInterval     = "STAGESUB_STATS_INTERVAL"         // default 30s
	EnvStatsChanges      = "STAGESUB_STATS_CHANGE_DETECTION" // default on; "0"/"false"/"off": query every tenant every refresh
	EnvStatsFullInterval = "STAGESUB_STATS_FULL_INTERVAL"    // with change detection: re-query every tenant at least this often, default 10m
	EnvPanelURL          = "STAGESUB_PANEL_URL"              // e.g. https://{slug}.localhost:8443/
	EnvMetricsToken      = "STAGESUB_METRICS_TOKEN"          // bearer token for /metrics; empty = open
	EnvLogLevel          = "STAGESUB_LOG_LEVEL"              // debug, info, warn, error
	EnvTrustedProxies    = "STAGESUB_TRUSTED_PROXIES"        // comma-separated CIDRs whose X-Forwarded-For is believed; default loopback
	EnvStateFile         = "STAGESUB_ADMIN_STATE_FILE"       // saved report; default $STATE_DIRECTORY/stats.json, else off; "off" disables
	// EnvStateDirectory is set by systemd (StateDirectory=): colon-separated
	// absolute paths; the first one holds the default state file.
	EnvStateDirectory = "STATE_DIRECTORY"
)

// Config is the admin's configuration, from Load.
type Config struct {
	Listen, Advertise string
	Register          bool
	ConsulAddr        string
	ConsulToken       string
	BaseDomain        string
	PanelURL          string // template with {slug}
	User              string
	PasswordHash      string
	SessionKey        []byte
	SessionKeyRandom  bool
	StatsPassword     string
	StatsDSN          string
	Concurrency       int
	Timeout           time.Duration
	Interval          time.Duration
	// ChangeDetection skips tenants whose write counters did not move;
	// FullInterval bounds how long a tenant goes unqueried.
	ChangeDetection bool
	FullInterval    time.Duration
	MetricsToken    string
	LogLevel        slog.Level
	// TrustedProxies are the peers (the routers) whose X-Forwarded-For
	// names the client for the login rate limit; default loopback.
	TrustedProxies []netip.Prefix
	// StateFile keeps the last published report across restarts (see
	// admin.CacheOptions.StateFile); "" = off.
	StateFile string
}

// Main is the admin process: Load, then Run until ctx ends; Run stops
// everything it starts.
type Main struct {
	Config Config
	Logger *slog.Logger
	// Addr is the address the server listens on once Run has started
	// (closed Started).
	Addr    string
	Started chan struct{}
	Cache   *admin.Cache

	stderr io.Writer
}

// NewMain returns a Main logging to stderr.
func NewMain(stderr io.Writer) *Main {
	return &Main{stderr: stderr, Started: make(chan struct{})}
}

// Load reads the configuration from args (no flags but -h) and environ. It
// does no I/O.
func (m *Main) Load(args, environ []string) error {
	fs := flag.NewFlagSet("stagesub-admin", flag.ContinueOnError)
	fs.SetOutput(m.stderr)
	fs.Usage = func() {
		fmt.Fprintln(m.stderr, "usage: stagesub-admin [hash-password]   (configured from the environment; see admin/README.md)")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unknown argument %q", fs.Arg(0))
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	var errs []error
	c := Config{
		Listen:        or(env[EnvListen], "127.0.0.1:0"),
		Advertise:     env[EnvAdvertise],
		Register:      env[EnvRegister] != "0" && env[EnvRegister] != "false",
		ConsulAddr:    or(env[registry.EnvConsulAddr], "127.0.0.1:8500"),
		ConsulToken:   env[registry.EnvConsulToken],
		BaseDomain:    strings.TrimSuffix(strings.ToLower(env[registry.EnvBaseDomain]), "."),
		PanelURL:      env[EnvPanelURL],
		User:          env[EnvAdminUser],
		PasswordHash:  env[EnvAdminPasswordHash],
		StatsPassword: env[EnvStatsPassword],
		StatsDSN:      env[EnvStatsDSN],
		MetricsToken:  env[EnvMetricsToken],
		Concurrency:   admin.DefaultConcurrency,
		Timeout:       admin.DefaultTimeout,
		Interval:      admin.DefaultInterval,
		FullInterval:  admin.DefaultFullEvery,
	}
	switch v := strings.ToLower(env[EnvStatsChanges]); v {
	case "", "1", "true", "on":
		c.ChangeDetection = true
	case "0", "false", "off":
	default:
		errs = append(errs, fmt.Errorf("%s: want on or off, got %q", EnvStatsChanges, env[EnvStatsChanges]))
	}
	if c.User == "" {
		errs = append(errs, fmt.Errorf("%s is required", EnvAdminUser))
	}
	if c.PasswordHash == "" {
		errs = append(errs, fmt.Errorf("%s is required (make one with: stagesub-admin hash-password)", EnvAdminPasswordHash))
	} else if err := password.Check(c.PasswordHash); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvAdminPasswordHash, err))
	}
	if c.PanelURL == "" && c.BaseDomain != "" {
		c.PanelURL = "https://{slug}." + c.BaseDomain + "/"
	}
	if c.PanelURL != "" && !strings.Contains(c.PanelURL, "{slug}") {
		errs = append(errs, fmt.Errorf("%s must contain {slug}", EnvPanelURL))
	}
	if v := env[EnvStatsConcurrency]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			errs = append(errs, fmt.Errorf("%s: want 1..1000, got %q", EnvStatsConcurrency, v))
		}
		c.Concurrency = n
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{EnvStatsTimeout, &c.Timeout}, {EnvStatsInterval, &c.Interval}, {EnvStatsFullInterval, &c.FullInterval}} {
		if v := env[d.name]; v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x <= 0 {
				errs = append(errs, fmt.Errorf("%s: want a positive duration like 2s, got %q", d.name, v))
			}
			*d.dst = x
		}
	}
	if v := env[EnvSessionKey]; v != "" {
		k, err := decodeKey(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvSessionKey, err))
		}
		c.SessionKey = k
	} else {
		c.SessionKey = make([]byte, 32)
		_, _ = rand.Read(c.SessionKey)
		c.SessionKeyRandom = true
	}
	if v := env[EnvLogLevel]; v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvLogLevel, err))
		}
	}
	if v := env[EnvTrustedProxies]; v != "" {
		p, err := loginlimit.ParseTrustedProxies(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvTrustedProxies, err))
		}
		c.TrustedProxies = p
	} else {
		c.TrustedProxies = loginlimit.DefaultTrustedProxies()
	}
	switch v := env[EnvStateFile]; {
	case strings.EqualFold(v, "off"):
	case v != "":
		c.StateFile = filepath.Clean(v)
	case env[EnvStateDirectory] != "":
		dir, _, _ := strings.Cut(env[EnvStateDirectory], ":")
		c.StateFile = filepath.Join(dir, "stats.json")
	}
	if _, err := postgres.New(postgres.Config{DSN: c.StatsDSN}); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvStatsDSN, err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	m.Config = c
	m.Logger = slog.New(slog.NewTextHandler(m.stderr, &slog.HandlerOptions{Level: c.LogLevel}))
	return nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// decodeKey accepts hex or (std or URL) base64 of at least 32 bytes.
func decodeKey(s string) ([]byte, error) {
	for _, dec := range []func(string) ([]byte, error){hex.DecodeString,
		base64.StdEncoding.DecodeString, base64.RawStdEncoding.DecodeString,
		base64.URLEncoding.DecodeString, base64.RawURLEncoding.DecodeString} {
		if k, err := dec(s); err == nil && len(k) >= 32 {
			return k, nil
		}
	}
	return nil, errors.New("want at least 32 bytes, hex or base64 (e.g. openssl rand -hex 32)")
}

// Run serves until ctx ends: it watches Consul, refreshes the stats cache,
// serves HTTP and keeps the admin registered in Consul.
func (m *Main) Run(ctx context.Context) error {
	c := m.Config
	log := m.Logger
	if c.SessionKeyRandom {
		log.Warn("no " + EnvSessionKey + ": using a random key; sessions end on restart and are not shared between replicas")
	}
	ccfg := api.DefaultConfig()
	ccfg.Address = c.ConsulAddr
	ccfg.Token = c.ConsulToken
	cc, err := api.NewClient(ccfg)
	if err != nil {
		return fmt.Errorf("consul client: %w", err)
	}
	src, err := postgres.New(postgres.Config{DSN: c.StatsDSN, Password: c.StatsPassword})
	if err != nil {
		return err
	}

	var activity admin.ActivitySource
	if c.ChangeDetection {
		activity = src
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watcher := consul.NewWatcher(cc, consul.WatchOptions{Logger: log.With("component", "watch")})

	var (
		metrics *prometheus.Metrics
		h       *http.Handler
	)
	m.Cache = admin.NewCache(admin.CacheOptions{
		Collector: &admin.Collector{
			Source: src, Activity: activity, FullEvery: c.FullInterval,
			Concurrency: c.Concurrency, Timeout: c.Timeout,
			PanelURL: panelURL(c.PanelURL), Logger: log.With("component", "stats"),
		},
		Snapshot:    watcher.Snapshot,
		Ready:       watcher.Ready(),
		Interval:    c.Interval,
		OnReport:    func(r *admin.Report) { metrics.Observe(r); h.Warm(r) },
		StateFile:   c.StateFile,
		OnStateSave: func(err error) { metrics.ObserveStateSave(err) },
		Logger:      log.With("component", "stats"),
	})
	metrics = prometheus.New(m.Cache.Report)
	reg := prom.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := metrics.Register(reg); err != nil {
		return err
	}
	h, err = http.New(http.Options{
		Stats: m.Cache, User: c.User, PasswordHash: c.PasswordHash, SessionKey: c.SessionKey,
		Metrics:      promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		MetricsToken: c.MetricsToken, TrustedProxies: c.TrustedProxies, Logger: log.With("component", "http"),
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	m.Addr = ln.Addr().String()
	srv := &nethttp.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Info("listening", "addr", m.Addr)

	var wg sync.WaitGroup
	run := func(name string, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					log.Error("goroutine panicked", "name", name, "panic", p)
					cancel()
				}
			}()
			f()
		}()
	}
	serveErr := make(chan error, 1)
	run("watch", func() { _ = watcher.Run(ctx) })
	run("cache", func() { _ = m.Cache.Run(ctx) })
	run("http", func() {
		if err := srv.Serve(ln); !errors.Is(err, nethttp.ErrServerClosed) {
			serveErr <- err
			cancel()
		}
	})

	var deregister func(context.Context) error
	if c.Register {
		host, port, err := advertise(c.Advertise, m.Addr)
		if err != nil {
			log.Error("not registering in consul", "err", err)
		} else {
			var id string
			id, deregister, err = consul.Register(ctx, cc, registry.Registration{
				Service: registry.ServiceAdmin, Address: host, Port: port, HealthPath: "/healthz",
			})
			if err != nil {
				log.Error("consul registration failed; serving unregistered", "err", err)
			} else {
				log.Info("registered in consul", "service", registry.ServiceAdmin, "id", id)
			}
		}
	}
	close(m.Started)

	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if deregister != nil {
		if err := deregister(sctx); err != nil {
			log.Warn("consul deregistration failed", "err", err)
		}
	}
	_ = srv.Shutdown(sctx)
	wg.Wait()
	select {
	case err := <-serveErr:
		return fmt.Errorf("http: %w", err)
	default:
	}
	return nil
}

// advertise splits the advertised address (or the listen address).
func advertise(adv, listen string) (string, int, error) {
	if adv == "" {
		adv = listen
	}
	host, ps, err := net.SplitHostPort(adv)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", EnvAdvertise, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port <= 0 {
		return "", 0, fmt.Errorf("%s: bad port in %q", EnvAdvertise, adv)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return "", 0, fmt.Errorf("%s: %q is not an address others can reach; set %s", EnvAdvertise, adv, EnvAdvertise)
	}
	return host, port, nil
}

func panelURL(tmpl string) func(string) string {
	if tmpl == "" {
		return nil
	}
	return func(slug string) string { return strings.ReplaceAll(tmpl, "{slug}", slug) }
}

// HashPassword reads one password line from in and writes its argon2id
// hash to out.
func HashPassword(in io.Reader, out io.Writer) error {
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if len(pw) < 12 {
		return errors.New("password must be at least 12 characters")
	}
	h, err := password.Hash(pw)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, h)
	return err
}
