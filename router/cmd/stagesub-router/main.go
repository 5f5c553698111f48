// Command stagesub-router is StageSub's edge router: it maps
// <slug>.<base domain>, custom domains and admin.<base domain> to healthy
// instances found in Consul and proxies to them. See router/README.md for
// its configuration.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
	"stagesub.dev/router"
	"stagesub.dev/router/acme"
	"stagesub.dev/router/certs"
	"stagesub.dev/router/logbuf"
	"stagesub.dev/router/metrics"
	"stagesub.dev/router/proxy"
	"stagesub.dev/router/route"
)

func main() {
	tuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	if err := m.Load(os.Args[1:], os.Environ()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := m.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	<-ctx.Done()
	if err := m.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Garbage collector defaults of the router process, used when GOGC and
// GOMEMLIMIT are not set (either variable overrides its default as usual).
// The router's live heap is small (routing table, pooled connections), so
// at Go's default GOGC=100 it collected every few thousand requests and the
// collector took about a tenth of its CPU under load. GOGC=400 collects
// about four times less often; the memory limit bounds the heap regardless:
// near it the collector runs as often as needed.
const (
	defaultGOGC     = 400
	defaultMemLimit = 1 << 30 // 1 GiB
)

// tuneGC applies the defaults above for the variables getenv does not set.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGOGC)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemLimit)
	}
}

// CertEnv is what a CertSource factory gets from Main (for TLS mode acme).
type CertEnv struct {
	Base    string
	Allowed func(host string) bool // route.Holder.IsCustomDomain on the live table
	Consul  *api.Client
	Logger  *slog.Logger
}

// Main is the router process: Load, Run, then Close. Tests run it in-process.
type Main struct {
	Config Config
	Stdout io.Writer // access log; default os.Stdout
	Stderr io.Writer // process log; default os.Stderr
	// NewCertSource builds the CertSource for TLS mode acme; Load sets it to
	// stagesub.dev/router/acme (configured by its STAGESUB_ACME_* variables)
	// unless it is already set. A returned io.Closer is closed by Close.
	NewCertSource func(ctx context.Context, e CertEnv) (router.CertSource, error)

	log       *slog.Logger
	tables    *route.Holder
	metrics   *metrics.Metrics
	handler   *proxy.Handler
	watcher   *consul.Watcher
	certs     router.CertSource
	servers   []*http.Server
	addrs     map[string]string
	cancel    context.CancelFunc
	bg        sync.WaitGroup
	draining  atomic.Bool
	dereg     atomic.Pointer[func(context.Context) error]
	caPath    string
	accessBuf *logbuf.Writer
	closeOnce sync.Once
	closeErr  error
}

// NewMain returns a Main writing to the process's stdout and stderr.
func NewMain() *Main { return &Main{Stdout: os.Stdout, Stderr: os.Stderr} }

// Load reads the configuration from args and environ.
func (m *Main) Load(args, environ []string) error {
	c, err := Load(args, environ)
	if err != nil {
		return err
	}
	m.Config = c
	if c.TLSMode == router.TLSACME && m.NewCertSource == nil {
		ac, err := acme.Load(environ)
		if err != nil {
			return fmt.Errorf("stagesub-router: %w", err)
		}
		m.NewCertSource = func(ctx context.Context, e CertEnv) (router.CertSource, error) {
			mgr, err := acme.New(ctx, ac, acme.Options{Base: e.Base, Allowed: e.Allowed, Consul: e.Consul, Logger: e.Logger})
			if err != nil {
				return nil, err
			}
			return mgr, nil
		}
	}
	return nil
}

// Run starts the watcher and the listeners and returns once they are
// listening and the first registry snapshot arrived (or StartWait passed).
func (m *Main) Run(ctx context.Context) (err error) {
	c := m.Config
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(c.LogLevel))
	m.log = slog.New(slog.NewJSONHandler(m.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, m.cancel = context.WithCancel(ctx)
	var opened []net.Listener
	defer func() {
		if err != nil {
			m.cancel()
			for _, ln := range opened {
				ln.Close()
			}
		}
	}()

	empty, err := route.Build(nil, route.Options{Base: c.BaseDomain})
	if err != nil {
		return err
	}
	m.tables = route.NewHolder(empty)

	cc := api.DefaultConfig()
	cc.Address, cc.Token = c.ConsulAddr, c.ConsulToken
	client, err := api.NewClient(cc)
	if err != nil {
		return fmt.Errorf("stagesub-router: consul client: %w", err)
	}
	m.watcher = consul.NewWatcher(client, consul.WatchOptions{Logger: m.log, OnSnapshot: m.publish})
	m.metrics = metrics.New(m.watcher.Age)
	if err := m.metrics.RegisterWatcher(m.watcher.Stats); err != nil {
		return fmt.Errorf("stagesub-router: %w", err)
	}

	var access io.Writer // nil: no access log
	if c.AccessLog {
		// Buffered like nginx's access_log buffer=: at most 64 KiB or 200 ms late.
		m.accessBuf = logbuf.New(m.Stdout, 64<<10, 200*time.Millisecond)
		access = m.accessBuf
	}
	m.handler = proxy.New(proxy.Config{
		Tables: m.tables, Metrics: m.metrics, Logger: m.log, AccessLogWriter: access,
		TrustedProxies: c.TrustedProxies, ApexRedirect: c.ApexRedirect, BlockPaths: c.BlockPaths,
		NoInstanceWait: c.NoInstanceWait, MaxAttempts: c.MaxAttempts,
		RetryBodyLimit: c.RetryBodyBytes, MaxBodyBytes: c.MaxBodyBytes,
		DialTimeout: c.DialTimeout, ResponseTimeout: c.UpstreamTimeout,
	})

	if err := m.setupTLS(ctx, client); err != nil {
		return err
	}

	m.addrs = map[string]string{}
	errorLog := log.New(slogWriter{m.log}, "", 0)
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{Handler: h, ReadHeaderTimeout: c.ReadHeaderTimeout, IdleTimeout: c.IdleTimeout,
			MaxHeaderBytes: c.MaxHeaderBytes, ErrorLog: errorLog}
	}
	var httpHandler http.Handler = m.handler
	var listeners []func() error
	if m.certs != nil {
		ln, err := net.Listen("tcp", c.HTTPSAddr)
		if err != nil {
			return fmt.Errorf("stagesub-router: listen https: %w", err)
		}
		opened = append(opened, ln)
		m.addrs["https"] = ln.Addr().String()
		_, port, _ := net.SplitHostPort(m.addrs["https"])
		httpHandler = m.certs.HTTPHandler(m.handler.RedirectToHTTPS(port))
		tc := m.certs.TLSConfig().Clone()
		for _, p := range []string{"h2", "http/1.1"} {
			if !slices.Contains(tc.NextProtos, p) {
				tc.NextProtos = append(tc.NextProtos, p)
			}
		}
		srv := newServer(m.handler)
		srv.TLSConfig = tc
		m.servers = append(m.servers, srv)
		listeners = append(listeners, func() error { return srv.Serve(tls.NewListener(ln, tc)) })
	}
	ln, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("stagesub-router: listen http: %w", err)
	}
	opened = append(opened, ln)
	m.addrs["http"] = ln.Addr().String()
	srv := newServer(httpHandler)
	if m.certs == nil {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	}
	m.servers = append(m.servers, srv)
	listeners = append(listeners, func() error { return srv.Serve(ln) })

	aln, err := net.Listen("tcp", c.AdminAddr)
	if err != nil {
		return fmt.Errorf("stagesub-router: listen admin: %w", err)
	}
	opened = append(opened, aln)
	m.addrs["admin"] = aln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", m.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.metrics.Registry, promhttp.HandlerOpts{}))
	asrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: errorLog}
	m.servers = append(m.servers, asrv)
	listeners = append(listeners, func() error { return asrv.Serve(aln) })

	m.goBackground(func() { _ = m.watcher.Run(ctx) })
	select {
	case <-m.watcher.Ready():
	case <-time.After(c.StartWait):
		m.log.Warn("no registry snapshot yet; serving an empty table until Consul answers", "consul", c.ConsulAddr, "waited", c.StartWait)
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, serve := range listeners {
		m.goBackground(func() {
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.log.Error("listener stopped", "err", err)
			}
		})
	}
	if c.Register {
		m.goBackground(func() { m.register(ctx, client) })
	}
	m.log.Info("stagesub-router listening", "http", m.addrs["http"], "https", m.addrs["https"], "admin", m.addrs["admin"],
		"base", c.BaseDomain, "tls", c.TLSMode, "consul", c.ConsulAddr)
	return nil
}

// setupTLS makes the CertSource of the configured mode; nil for off.
func (m *Main) setupTLS(ctx context.Context, client *api.Client) error {
	c := m.Config
	switch c.TLSMode {
	case router.TLSInternal:
		// A new CA is name-constrained to the base domain unless opted out;
		// an existing one is used as it is.
		ca, err := certs.LoadOrCreateCA(c.TLSDir, certs.CAOptions{Base: c.BaseDomain, Unconstrained: c.CAUnconstrained})
		if err != nil {
			return err
		}
		in, err := certs.NewInternal(ca, c.BaseDomain, m.tables.IsCustomDomain, m.log)
		if err != nil {
			return err
		}
		m.certs, m.caPath = in, ca.CertPath
		m.log.Info("internal CA", "ca", ca.CertPath, "permitted_dns_domains", ca.Cert.PermittedDNSDomains,
			"hint", "curl --cacert "+ca.CertPath+" https://<slug>."+c.BaseDomain+":<port>/")
		fmt.Fprintf(m.Stderr, "stagesub-router: internal CA certificate: %s\n", ca.CertPath)
	case router.TLSFiles:
		f, err := certs.NewFiles(c.TLSCertFile, c.TLSKeyFile, m.log)
		if err != nil {
			return err
		}
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		m.goBackground(func() {
			defer signal.Stop(hup)
			f.Watch(ctx, 5*time.Second, hup)
		})
		m.certs = f
	case router.TLSACME:
		if m.NewCertSource == nil {
			return errors.New("stagesub-router: TLS mode acme is not wired in this build")
		}
		src, err := m.NewCertSource(ctx, CertEnv{Base: c.BaseDomain, Allowed: m.tables.IsCustomDomain, Consul: client, Logger: m.log})
		if err != nil {
			return fmt.Errorf("stagesub-router: acme: %w", err)
		}
		m.certs = src
	}
	return nil
}

// publish builds and swaps in the table for a new registry snapshot.
func (m *Main) publish(s *registry.Snapshot) {
	prev := m.tables.Load()
	t, err := route.Build(s, route.Options{Base: m.Config.BaseDomain, Prev: prev})
	if err != nil {
		m.log.Error("routing table not built; keeping the previous one", "generation", s.Generation, "err", err)
		return
	}
	m.tables.Store(t)
	m.metrics.SetRoutes(t.States())
	for _, slug := range prev.Tenants() {
		if _, ok := slices.BinarySearch(t.Tenants(), slug); !ok {
			m.metrics.ForgetTenant(slug)
		}
	}
	m.metrics.Generation.Set(float64(t.Generation))
	if !slices.Equal(t.Problems, prev.Problems) {
		for _, p := range t.Problems {
			m.log.Warn("registry entry not routed", "problem", p, "generation", t.Generation)
		}
	}
	m.log.Debug("routing table published", "generation", t.Generation, "hosts", t.Hosts())
}

// register registers the router in Consul (retrying while Consul is away).
func (m *Main) register(ctx context.Context, client *api.Client) {
	host, portStr, _ := net.SplitHostPort(m.addrs["admin"])
	if m.Config.Advertise != "" {
		host = m.Config.Advertise
	}
	port, _ := strconv.Atoi(portStr)
	reg := registry.Registration{Service: registry.ServiceRouter, Address: host, Port: port, HealthPath: "/healthz"}
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		_, dereg, err := consul.Register(ctx, client, reg)
		if err == nil {
			m.dereg.Store(&dereg)
			m.log.Info("registered in consul", "service", registry.ServiceRouter, "addr", net.JoinHostPort(host, portStr))
			return
		}
		m.log.Warn("consul registration failed; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// healthz answers 200 with the table's generation and snapshot age once a
// snapshot was loaded, and 503 before that and while draining.
func (m *Main) healthz(w http.ResponseWriter, r *http.Request) {
	t := m.tables.Load()
	status := "ok"
	code := http.StatusOK
	switch {
	case m.draining.Load():
		status, code = "draining", http.StatusServiceUnavailable
	case m.watcher.Snapshot() == nil:
		status, code = "starting", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"status": status, "generation": t.Generation, "hosts": t.Hosts(),
		"snapshot_age_seconds": m.watcher.Age().Seconds(),
	})
}

// Close drains: it fails /healthz, deregisters from Consul, stops accepting,
// waits up to DrainTimeout for requests in flight, then stops the watcher.
// A routing change never touches open connections; WebSockets (hijacked)
// end when the process exits.
// Close is safe to call more than once; later calls return the first result.
func (m *Main) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Main) close() error {
	if m.cancel == nil {
		return nil
	}
	m.draining.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), m.Config.DrainTimeout)
	defer cancel()
	if dereg := m.dereg.Load(); dereg != nil {
		if err := (*dereg)(ctx); err != nil {
			m.log.Warn("consul deregistration failed", "err", err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(m.servers))
	for i, s := range m.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Shutdown(ctx)
		}()
	}
	wg.Wait()
	m.cancel()
	m.bg.Wait()
	m.handler.CloseIdleConnections()
	if cl, ok := m.certs.(io.Closer); ok {
		errs = append(errs, cl.Close())
	}
	if m.accessBuf != nil {
		errs = append(errs, m.accessBuf.Close())
	}
	m.log.Info("stagesub-router stopped")
	return errors.Join(errs...)
}

// Addr returns the bound address of listener "http", "https" or "admin"
// ("" when not listening). Valid after Run.
func (m *Main) Addr(name string) string { return m.addrs[name] }

// CAPath returns the internal CA certificate file ("" in other TLS modes).
func (m *Main) CAPath() string { return m.caPath }

// Tables returns the live routing table holder. Valid after Run.
func (m *Main) Tables() *route.Holder { return m.tables }

func (m *Main) goBackground(f func()) {
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		f()
	}()
}

// slogWriter adapts http.Server's error log to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(string(p), "component", "http")
	return len(p), nil
}
