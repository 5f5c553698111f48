// Package acme gives the router its TLS certificates from an ACME CA
// through certmagic:
//
//   - "*.<base>" and "<base>" by DNS-01, with a DNS provider written in this
//     project (RFC 2136 with TSIG, or an operator's command), obtained or
//     loaded when the Manager starts and renewed in the background;
//   - on-demand certificates, at the first TLS handshake, for custom domains
//     that a tenant record lists (HTTP-01 on the router's HTTP listener, or
//     TLS-ALPN-01 on its HTTPS listener), never for names under the base
//     domain, rate-limited;
//   - kept in the file system, or in Consul KV (certstore/consulstore) so
//     that replicas share them: one replica obtains, the others wait on its
//     lock and load the result.
//
// A Manager satisfies the router's certificate-source seam: TLSConfig for
// the HTTPS listener and HTTPHandler around the HTTP listener's handler.
// It is also a prometheus.Collector.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/hashicorp/consul/api"
	"github.com/libdns/libdns"

	"stagesub.dev/router/certstore/consulstore"
	"stagesub.dev/router/dnsprovider/exec"
	"stagesub.dev/router/dnsprovider/rfc2136"
)

// Options are the Manager's collaborators from the router.
type Options struct {
	// Base is the base domain ("stagesub.example"), required.
	Base string
	// Allowed reports whether host (lowercase, no port, no trailing dot) is
	// a registered custom domain. It is called during TLS handshakes, so it
	// must be fast and must not do I/O: the router answers from its
	// in-memory route table. Nil allows no custom domain.
	Allowed func(host string) bool
	// Consul is required when Config.Storage is StorageConsul.
	Consul *api.Client
	// Logger receives the Manager's and certmagic's logs; slog.Default()
	// if nil.
	Logger *slog.Logger
	// OnEvent, if set, is called after the Manager's own handling of every
	// certmagic event (for tests and diagnostics); it must return quickly.
	OnEvent func(event string, data map[string]any)
}

// Manager obtains, renews, stores and serves the router's certificates.
// Create it with New and stop it with Close. It is safe for concurrent use.
type Manager struct {
	base    string
	allowed func(string) bool
	logger  *slog.Logger
	onEvent func(string, map[string]any)

	cache      *certmagic.Cache
	wildcard   *certmagic.Config // "*.<base>" and "<base>", DNS-01
	onDemand   *certmagic.Config // custom domains, HTTP-01 / TLS-ALPN-01
	dnsIssuer  *certmagic.ACMEIssuer
	httpIssuer *certmagic.ACMEIssuer

	limiter   *limiter
	metrics   *metrics
	closeOnce sync.Once
}

// New builds a Manager and obtains or loads the wildcard and apex
// certificates before it returns (one replica obtains; the others wait on
// the storage lock and load). An error means the router cannot serve
// HTTPS: a bad configuration, an unreachable CA, or a DNS update refused
// (for example a wrong TSIG secret).
func New(ctx context.Context, cfg Config, opts Options) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := normalize(opts.Base)
	if base == "" || strings.Contains(base, "*") {
		return nil, fmt.Errorf("acme: invalid base domain %q", opts.Base)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "acme")

	storage, err := newStorage(cfg, opts, logger)
	if err != nil {
		return nil, err
	}
	roots, err := loadRoots(cfg.CARoots)
	if err != nil {
		return nil, err
	}
	provider, err := newProvider(cfg)
	if err != nil {
		return nil, err
	}

	m := &Manager{
		base:    base,
		allowed: opts.Allowed,
		logger:  logger,
		onEvent: opts.OnEvent,
		limiter: newLimiter(cfg.OnDemandLimit, cfg.OnDemandWindow),
		metrics: newMetrics(),
	}
	zl := newZapLogger(logger.Handler())
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(c certmagic.Certificate) (*certmagic.Config, error) { return m.configFor(c.Names), nil },
		Logger:           zl,
	})

	m.wildcard = certmagic.New(m.cache, certmagic.Config{
		Storage: storage,
		Logger:  zl,
		OnEvent: m.eventHandler(false),
	})
	m.dnsIssuer = certmagic.NewACMEIssuer(m.wildcard, certmagic.ACMEIssuer{
		CA:           cfg.CA,
		Email:        cfg.Email,
		Agreed:       cfg.Agreed,
		TrustedRoots: roots,
		DNS01Solver: &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
			DNSProvider:        provider,
			TTL:                cfg.DNSTTL,
			PropagationDelay:   cfg.PropagationDelay,
			PropagationTimeout: propagationTimeout(cfg.PropagationTimeout),
			Resolvers:          cfg.Resolvers,
			Logger:             zl,
		}},
		Logger: zl,
	})
	m.wildcard.Issuers = []certmagic.Issuer{m.dnsIssuer}

	m.onDemand = certmagic.New(m.cache, certmagic.Config{
		Storage:           storage,
		Logger:            zl,
		OnEvent:           m.eventHandler(true),
		OnDemand:          &certmagic.OnDemandConfig{DecisionFunc: m.decide},
		DefaultServerName: base, // clients without SNI get the apex certificate
	})
	m.httpIssuer = certmagic.NewACMEIssuer(m.onDemand, certmagic.ACMEIssuer{
		CA:             cfg.CA,
		Email:          cfg.Email,
		Agreed:         cfg.Agreed,
		TrustedRoots:   roots,
		AltHTTPPort:    cfg.HTTPPort,
		AltTLSALPNPort: cfg.TLSPort,
		Logger:         zl,

		DisableHTTPChallenge:    !slices.Contains(cfg.OnDemandChallenges, ChallengeHTTP01),
		DisableTLSALPNChallenge: !slices.Contains(cfg.OnDemandChallenges, ChallengeTLSALPN01),
	})
	m.onDemand.Issuers = []certmagic.Issuer{m.httpIssuer}

	names := []string{"*." + base, base}
	start := time.Now()
	if err := m.wildcard.ManageSync(ctx, names); err != nil {
		m.cache.Stop()
		return nil, fmt.Errorf("acme: certificates for %s: %w", strings.Join(names, " and "), err)
	}
	logger.Info("acme: certificates ready", "names", names, "ca", cfg.CA, "storage", cfg.Storage,
		"dns_provider", cfg.DNSProvider, "took", time.Since(start).Round(time.Millisecond))
	return m, nil
}

func propagationTimeout(d time.Duration) time.Duration {
	if d < 0 {
		return -1 // certmagic: skip propagation checks
	}
	return d
}

func newStorage(cfg Config, opts Options, logger *slog.Logger) (certmagic.Storage, error) {
	switch cfg.Storage {
	case StorageConsul:
		if opts.Consul == nil {
			return nil, errors.New("acme: storage consul needs a Consul client")
		}
		return consulstore.New(opts.Consul, consulstore.Options{Prefix: cfg.ConsulPrefix, Logger: logger}), nil
	default:
		dir := cfg.StorageDir
		if dir == "" {
			dir = certmagic.Default.Storage.(*certmagic.FileStorage).Path
		}
		return &certmagic.FileStorage{Path: dir}, nil
	}
}

func loadRoots(files []string) (*x509.CertPool, error) {
	if len(files) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("acme: CA roots: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("acme: CA roots: no PEM certificate in %s", f)
		}
	}
	return pool, nil
}

// dnsProvider is what certmagic's DNS-01 solver needs.
type dnsProvider interface {
	libdns.RecordAppender
	libdns.RecordDeleter
}

func newProvider(cfg Config) (dnsProvider, error) {
	switch cfg.DNSProvider {
	case ProviderExec:
		p := &exec.Provider{Command: cfg.ExecCommand}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("acme: %w", err)
		}
		return p, nil
	default:
		p := &rfc2136.Provider{Server: cfg.RFC2136Server, KeyName: cfg.RFC2136KeyName,
			KeyAlg: cfg.RFC2136KeyAlg, Key: cfg.RFC2136Secret}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("acme: %w", err)
		}
		return p, nil
	}
}

// configFor routes a cached certificate to the Config that manages it:
// the wildcard Config for the base domain's certificates, else on-demand.
func (m *Manager) configFor(names []string) *certmagic.Config {
	for _, n := range names {
		if n == m.base || n == "*."+m.base {
			return m.wildcard
		}
	}
	return m.onDemand
}

// eventHandler returns certmagic's OnEvent callback: logs, metrics and,
// for the on-demand Config, the issuance rate limit (an error returned for
// "cert_obtaining" aborts the order).
func (m *Manager) eventHandler(onDemand bool) func(context.Context, string, map[string]any) error {
	return func(_ context.Context, event string, data map[string]any) error {
		var err error
		renewal, _ := data["renewal"].(bool)
		switch event {
		case "cert_obtaining":
			if onDemand && !renewal && !m.limiter.allow() {
				// ErrNoRetry: certmagic would otherwise retry within the handshake.
				err = certmagic.ErrNoRetry{Err: ErrRateLimited}
				m.metrics.refuse(ErrRateLimited)
				m.logger.Warn("acme: on-demand certificate refused: rate limit", "identifier", data["identifier"])
			} else {
				m.logger.Info("acme: ordering certificate", "identifier", data["identifier"], "renewal", renewal)
			}
		case "cert_obtained":
			m.metrics.op(renewal, nil)
			if id, ok := data["identifier"].(string); ok {
				m.metrics.track([]string{id})
			}
			m.logger.Info("acme: certificate obtained", "identifier", data["identifier"], "renewal", renewal, "issuer", data["issuer"])
		case "cert_failed":
			e, _ := data["error"].(error)
			m.metrics.op(renewal, errOr(e))
			m.logger.Error("acme: certificate order failed", "identifier", data["identifier"], "renewal", renewal, "err", e)
		case "cached_managed_cert":
			if sans, ok := data["sans"].([]string); ok {
				m.metrics.track(sans)
			}
		}
		if m.onEvent != nil {
			m.onEvent(event, data)
		}
		return err
	}
}

func errOr(err error) error {
	if err == nil {
		return errors.New("unknown error")
	}
	return err
}

// TLSConfig returns a new TLS configuration for the router's HTTPS
// listener: certificates from the shared cache (the wildcard and apex for
// the base domain, stored or on-demand ones for custom domains), TLS-ALPN-01
// answers, NextProtos h2, http/1.1 and acme-tls/1.
func (m *Manager) TLSConfig() *tls.Config { return m.onDemand.TLSConfig() }

// HTTPHandler wraps the router's port-80 handler: it answers HTTP-01
// challenges (any replica can answer: tokens live in the shared storage)
// and passes every other request to next.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	return m.httpIssuer.HTTPChallengeHandler(next)
}

// Renew renews the certificate for name ("*.<base>", "<base>" or a custom
// domain) now, even if it is not due, under the storage lock, and serves
// the new certificate from then on. (Scheduled renewals happen by
// themselves in the background; this is for operators and tests.)
func (m *Manager) Renew(ctx context.Context, name string) error {
	name = normalize(name)
	cfg := m.configFor([]string{name})
	var old []string
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if slices.Contains(c.Names, name) {
			old = append(old, c.Hash())
		}
	}
	if err := cfg.RenewCertSync(ctx, name, true); err != nil {
		return fmt.Errorf("acme: renew %s: %w", name, err)
	}
	// Serve the new certificate first, then drop the old ones, so that no
	// handshake finds the name missing from the cache in between.
	renewed, err := cfg.CacheManagedCertificate(ctx, name)
	if err != nil {
		return fmt.Errorf("acme: renew %s: loading the new certificate: %w", name, err)
	}
	old = slices.DeleteFunc(old, func(h string) bool { return h == renewed.Hash() })
	m.cache.Remove(old)
	return nil
}

// Close stops background renewal; later calls do nothing. It does not
// close listeners.
func (m *Manager) Close() error {
	m.closeOnce.Do(m.cache.Stop)
	return nil
}
