// Command stagesub-app serves the StageSub application for exactly one
// tenant (orchestra) and its database, and registers itself in Consul as
// service stagesub-app with Meta.tenant.
//
// Configuration comes from the environment (flags may override):
//
//	DATABASE_URL          required; the tenant's own role
//	STAGESUB_TENANT       required; the tenant slug, checked against the database
//	STAGESUB_LISTEN       listen address, default 127.0.0.1:0 (a free port)
//	STAGESUB_ADVERTISE    address registered in Consul (host or host:port);
//	                      default: the listen host (127.0.0.1 if unspecified) and the bound port
//	CONSUL_HTTP_ADDR      Consul agent, default 127.0.0.1:8500 (api.DefaultConfig's)
//	CONSUL_HTTP_TOKEN     Consul ACL token
//	STAGESUB_REGISTER     true (default): register in Consul, and refuse to
//	                      run unregistered (never routed) when Consul cannot
//	                      be reached within 10s; false: do not register
//	STAGESUB_TRUSTED_PROXIES comma-separated CIDRs whose X-Forwarded-For names
//	                      the client for the login rate limit; default loopback
//	STAGESUB_BASE_DOMAIN  base domain for the Host check (e.g. stagesub.com, localhost)
//	STAGESUB_LOG_LEVEL    debug, info (default), warn, error
//	STAGESUB_DB_MAX_CONNS pool size, default 4
//	STAGESUB_DRAIN_TIMEOUT how long SIGTERM waits for in-flight requests, default 10s
//
// Flag --migrate applies pending migrations (under an advisory lock) instead
// of refusing to start on an old schema. A missing or invalid setting exits
// with code 2; a start-up failure with code 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"stagesub.dev/app"
	apphttp "stagesub.dev/app/http"
	"stagesub.dev/app/loginlimit"
	"stagesub.dev/app/postgres"
	"stagesub.dev/app/schema"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
)

func main() {
	m := NewMain()
	if err := m.Load(os.Args[1:], os.Environ()); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "stagesub-app: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := m.Run(ctx)
	m.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "stagesub-app: %v\n", err)
		os.Exit(1)
	}
}

// Environment variables read by the app (besides registry.Env*).
const (
	EnvListen       = "STAGESUB_LISTEN"
	EnvAdvertise    = "STAGESUB_ADVERTISE"
	EnvLogLevel     = "STAGESUB_LOG_LEVEL"
	EnvDBMaxConns   = "STAGESUB_DB_MAX_CONNS"
	EnvDrainTimeout = "STAGESUB_DRAIN_TIMEOUT"
	// EnvRegister turns Consul registration off with "false" (or 0, no,
	// off). Registration is on by default: an app that is not registered
	// is never routed, so not registering must be a deliberate choice.
	EnvRegister = "STAGESUB_REGISTER"
	// EnvTrustedProxies lists the peers (CIDRs) whose X-Forwarded-For is
	// believed: the routers. Default loopback.
	EnvTrustedProxies = "STAGESUB_TRUSTED_PROXIES"
)

// DefaultConsulAddr is the official client's default agent address
// (api.DefaultConfig), used when CONSUL_HTTP_ADDR is unset.
const DefaultConsulAddr = "127.0.0.1:8500"

// Config is the app's validated configuration.
type Config struct {
	DatabaseURL string
	Tenant      string
	Listen      string // host:port; port 0 picks a free one
	Advertise   string // host or host:port; "" derives it from the listener
	// Register is true unless STAGESUB_REGISTER=false; then ConsulAddr is
	// not used.
	Register    bool
	ConsulAddr  string // never "": default DefaultConsulAddr
	ConsulToken string
	// TrustedProxies are peers whose X-Forwarded-For names the client
	// (login rate limit); nil means loopback.
	TrustedProxies []netip.Prefix
	BaseDomain     string
	LogLevel       slog.Level
	Migrate        bool
	MaxConns       int32
	DrainTimeout   time.Duration
}

// Main runs the app: Load, then Run until its context ends, then Close.
type Main struct {
	Config Config
	// LogOutput receives the JSON log; default os.Stderr.
	LogOutput io.Writer
	Logger    *slog.Logger

	ready      chan struct{}
	readyOnce  sync.Once
	addr       string // bound listen address, set before ready closes
	instanceID string // Consul service ID, "" when not registered
	pool       *pgxpool.Pool
}

// NewMain returns a Main with defaults.
func NewMain() *Main {
	return &Main{LogOutput: os.Stderr, ready: make(chan struct{})}
}

// Load reads and validates the configuration from args and environ
// ("KEY=value" pairs). Errors are one line, fit for the user.
func (m *Main) Load(args, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	get := func(k, def string) string {
		if v := strings.TrimSpace(env[k]); v != "" {
			return v
		}
		return def
	}
	c := Config{}
	fs := flag.NewFlagSet("stagesub-app", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Tenant, "tenant", get(registry.EnvTenant, ""), "tenant slug ($"+registry.EnvTenant+")")
	fs.StringVar(&c.Listen, "listen", get(EnvListen, "127.0.0.1:0"), "listen address ($"+EnvListen+")")
	fs.StringVar(&c.Advertise, "advertise", get(EnvAdvertise, ""), "address to register in Consul ($"+EnvAdvertise+")")
	fs.StringVar(&c.BaseDomain, "base-domain", get(registry.EnvBaseDomain, ""), "base domain ($"+registry.EnvBaseDomain+")")
	logLevel := fs.String("log-level", get(EnvLogLevel, "info"), "debug, info, warn or error ($"+EnvLogLevel+")")
	fs.BoolVar(&c.Migrate, "migrate", false, "apply pending schema migrations before serving")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.Usage()
			return err
		}
		return fmt.Errorf("%v (see --help)", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.DatabaseURL = env[registry.EnvDatabaseURL]
	c.ConsulAddr = get(registry.EnvConsulAddr, DefaultConsulAddr)
	c.ConsulToken = get(registry.EnvConsulToken, "")
	switch v := strings.ToLower(get(EnvRegister, "true")); v {
	case "true", "1", "yes", "on":
		c.Register = true
	case "false", "0", "no", "off":
		c.Register = false
	default:
		return fmt.Errorf("%s %q must be true or false", EnvRegister, v)
	}
	if v := get(EnvTrustedProxies, ""); v != "" {
		p, err := loginlimit.ParseTrustedProxies(v)
		if err != nil {
			return fmt.Errorf("%s: %v", EnvTrustedProxies, err)
		}
		c.TrustedProxies = p
	}

	if c.DatabaseURL == "" {
		return fmt.Errorf("%s is required", registry.EnvDatabaseURL)
	}
	if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
		return fmt.Errorf("%s is not a valid postgres URL", registry.EnvDatabaseURL)
	}
	if c.Tenant == "" {
		return fmt.Errorf("%s is required", registry.EnvTenant)
	}
	if err := registry.ValidateSlug(c.Tenant); err != nil {
		return fmt.Errorf("%s: %s", registry.EnvTenant, strings.TrimPrefix(err.Error(), "registry: "))
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || !validPort(port, true) {
		return fmt.Errorf("%s %q must be host:port (port 0 picks a free one)", EnvListen, c.Listen)
	}
	if c.Advertise != "" {
		host, port, err := net.SplitHostPort(c.Advertise)
		if err != nil {
			host, port = c.Advertise, ""
		}
		if host == "" || strings.ContainsAny(host, " /") || (port != "" && !validPort(port, false)) {
			return fmt.Errorf("%s %q must be a host or host:port", EnvAdvertise, c.Advertise)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("%s %q must be a reachable address, not %s", EnvAdvertise, c.Advertise, host)
		}
	}
	if c.Register {
		hostport := c.ConsulAddr
		if i := strings.Index(hostport, "://"); i >= 0 {
			hostport = hostport[i+3:]
		}
		if _, port, err := net.SplitHostPort(hostport); err != nil || !validPort(port, false) {
			return fmt.Errorf("%s %q must be host:port or a URL", registry.EnvConsulAddr, c.ConsulAddr)
		}
	}
	if c.BaseDomain != "" {
		c.BaseDomain = registry.NormalizeDomain(c.BaseDomain)
		if c.BaseDomain != "localhost" && registry.ValidateDomain(c.BaseDomain) != nil {
			return fmt.Errorf("%s %q is not a valid domain", registry.EnvBaseDomain, c.BaseDomain)
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("%s %q must be debug, info, warn or error", EnvLogLevel, *logLevel)
	}
	c.MaxConns = postgres.DefaultMaxConns
	if s := get(EnvDBMaxConns, ""); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			return fmt.Errorf("%s %q must be a number from 1 to 100", EnvDBMaxConns, s)
		}
		c.MaxConns = int32(n)
	}
	c.DrainTimeout = 10 * time.Second
	if s := get(EnvDrainTimeout, ""); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > 10*time.Minute {
			return fmt.Errorf("%s %q must be a duration like 10s (at most 10m)", EnvDrainTimeout, s)
		}
		c.DrainTimeout = d
	}
	m.Config = c
	return nil
}

func validPort(s string, zeroOK bool) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n <= 65535 && (n > 0 || (zeroOK && n == 0))
}

// Ready is closed once the app serves (and is registered, with Consul).
func (m *Main) Ready() <-chan struct{} { return m.ready }

// Addr returns the bound listen address; valid after Ready.
func (m *Main) Addr() string { return m.addr }

// InstanceID returns the Consul service ID; valid after Ready ("" without Consul).
func (m *Main) InstanceID() string { return m.instanceID }

// Run starts the app in order: connect (bounded pool), refuse a database of
// another tenant, check the schema version (migrating with --migrate),
// serve, register in Consul. It returns after ctx ends and the app has shut
// down: deregistered first, in-flight requests drained (DrainTimeout), pool
// closed. It returns an error when start-up fails.
func (m *Main) Run(ctx context.Context) error {
	c := m.Config
	start := time.Now()
	if m.Logger == nil {
		m.Logger = slog.New(slog.NewJSONHandler(m.LogOutput, &slog.HandlerOptions{Level: c.LogLevel})).
			With("tenant", c.Tenant)
	}
	log := m.Logger

	// 1. Connect.
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	pool, err := postgres.Open(cctx, c.DatabaseURL, postgres.PoolOptions{MaxConns: c.MaxConns})
	if err != nil {
		return err
	}
	m.pool = pool

	// 2 and 3. Tenant binding and schema version.
	if err := m.checkDatabase(cctx, log); err != nil {
		return err
	}
	cancel()

	// Metrics: every series carries the constant label tenant.
	reg := prometheus.NewRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"tenant": c.Tenant}, reg)
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Name: "stagesub_app_build_info", Help: "Build version of stagesub-app.",
		ConstLabels: prometheus.Labels{"version": app.Version}})
	buildInfo.Set(1)
	for _, col := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
		postgres.NewPoolCollector(pool),
		buildInfo,
	} {
		if err := wrapped.Register(col); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}

	db := postgres.New(pool)
	srv, err := apphttp.NewServer(apphttp.Config{
		Tenant: c.Tenant, BaseDomain: c.BaseDomain, Logger: log,
		Users: db, Musicians: db, Projects: db, Requests: db, Dashboard: db,
		Ping:       db.Ping,
		Registerer: wrapped, Gatherer: reg,
		TrustedProxies: c.TrustedProxies,
	})
	if err != nil {
		return err
	}

	// 4. Listen and serve.
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Listen, err)
	}
	m.addr = ln.Addr().String()
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	log.Info("listening", "addr", m.addr, "url", "http://"+m.addr)

	// 5. Register in Consul.
	deregister := func(context.Context) error { return nil }
	if !c.Register {
		log.Info("consul registration disabled", "env", EnvRegister+"=false")
	} else {
		var id string
		id, deregister, err = m.register(ctx, log)
		if err != nil {
			hs.Close()
			return err
		}
		m.instanceID = id
	}
	log.Info("ready", "addr", m.addr, "instance", m.instanceID, "startup_ms", time.Since(start).Milliseconds(), "version", app.Version)
	m.readyOnce.Do(func() { close(m.ready) })

	go m.cleanSessions(ctx, db, log)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		_ = deregister(context.Background())
		return fmt.Errorf("serve: %w", err)
	}

	// Shutdown: deregister first, so the router stops sending traffic, then drain.
	log.Info("shutting down")
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := deregister(dctx); err != nil {
		log.Error("deregister", "err", err)
	}
	dcancel()
	sctx, scancel := context.WithTimeout(context.Background(), c.DrainTimeout)
	defer scancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("drain timed out; closing connections", "err", err)
		hs.Close()
	}
	pool.Close()
	m.pool = nil
	log.Info("stopped")
	return nil
}

// checkDatabase refuses a database bound to another tenant and an old
// schema (unless --migrate), and binds an unbound database to the tenant.
func (m *Main) checkDatabase(ctx context.Context, log *slog.Logger) error {
	c := m.Config
	db := postgres.SQLDB(m.pool)
	defer db.Close()
	version, err := schema.Current(ctx, db)
	if err != nil {
		return err
	}
	bound := ""
	if version > 0 {
		if bound, err = schema.BoundTenant(ctx, db); err != nil {
			return err
		}
		if bound != "" && bound != c.Tenant {
			return fmt.Errorf("refusing to serve: the database belongs to tenant %q, but %s is %q (check DATABASE_URL)", bound, registry.EnvTenant, c.Tenant)
		}
	}
	switch latest := schema.Latest(); {
	case version < latest && !c.Migrate:
		return fmt.Errorf("refusing to serve: database schema version %d is behind this binary's %d; run `stagesubctl migrate %s` (or start with --migrate)", version, latest, c.Tenant)
	case version < latest:
		from, to, err := schema.Migrate(ctx, db)
		if err != nil {
			return err
		}
		log.Info("migrated schema", "from", from, "to", to)
	case version > latest:
		log.Warn("database schema is newer than this binary", "db_version", version, "binary_version", latest)
	}
	if bound == "" {
		// Re-check under the migrated schema; Bind refuses another tenant.
		if err := schema.Bind(ctx, db, c.Tenant, c.Tenant); err != nil {
			if app.ErrorCode(err) == app.EINVALID {
				return fmt.Errorf("refusing to serve: %s", app.ErrorMessage(err))
			}
			return err
		}
		log.Info("bound database to tenant")
	}
	return nil
}

// register registers the instance in Consul, retrying for up to 10s.
func (m *Main) register(ctx context.Context, log *slog.Logger) (string, func(context.Context) error, error) {
	c := m.Config
	cfg := api.DefaultConfig()
	cfg.Address = c.ConsulAddr
	cfg.Token = c.ConsulToken
	client, err := api.NewClient(cfg)
	if err != nil {
		return "", nil, fmt.Errorf("consul client: %w", err)
	}
	host, portStr, _ := net.SplitHostPort(m.addr)
	if c.Advertise != "" {
		if h, p, err := net.SplitHostPort(c.Advertise); err == nil {
			host, portStr = h, p
		} else {
			host = c.Advertise
		}
	} else if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	port, _ := strconv.Atoi(portStr)
	reg := registry.Registration{
		Service:    registry.ServiceApp,
		Tenant:     c.Tenant,
		Address:    host,
		Port:       port,
		Version:    app.Version,
		HealthPath: "/healthz",
	}
	deadline := time.Now().Add(10 * time.Second)
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		id, dereg, err := consul.Register(rctx, client, reg)
		cancel()
		if err == nil {
			log.Info("registered in consul", "service", reg.Service, "id", id, "address", host, "port", port)
			return id, dereg, nil
		}
		if registry.ErrorCode(err) == registry.EINVALID || time.Now().After(deadline) || ctx.Err() != nil {
			return "", nil, fmt.Errorf("register in consul at %s: %w", c.ConsulAddr, err)
		}
		log.Warn("consul registration failed; retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
}

// cleanSessions deletes expired sessions every 10 minutes until ctx ends.
func (m *Main) cleanSessions(ctx context.Context, db *postgres.DB, log *slog.Logger) {
	defer func() {
		if v := recover(); v != nil {
			log.Error("session cleanup panicked", "panic", v)
		}
	}()
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if n, err := db.DeleteExpiredSessions(cctx); err != nil {
				log.Warn("session cleanup", "err", err)
			} else if n > 0 {
				log.Debug("deleted expired sessions", "count", n)
			}
			cancel()
		}
	}
}

// Close releases what Run left open after a failed start. Safe to call twice.
func (m *Main) Close() error {
	if m.pool != nil {
		m.pool.Close()
		m.pool = nil
	}
	return nil
}
