package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"stagesub.dev/registry"
	"stagesub.dev/router"
	"stagesub.dev/router/proxy"
)

// Environment variable names read by the router (see router/README.md).
// CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN and STAGESUB_BASE_DOMAIN are shared
// with the other binaries (registry.Env*).
const (
	EnvHTTPAddr        = "STAGESUB_ROUTER_HTTP_ADDR"
	EnvHTTPSAddr       = "STAGESUB_ROUTER_HTTPS_ADDR"
	EnvAdminAddr       = "STAGESUB_ROUTER_ADMIN_ADDR"
	EnvAdvertise       = "STAGESUB_ROUTER_ADVERTISE"
	EnvRegister        = "STAGESUB_ROUTER_REGISTER"
	EnvTLSMode         = "STAGESUB_TLS_MODE"
	EnvStateDir        = "STAGESUB_STATE_DIR"
	EnvTLSDir          = "STAGESUB_TLS_DIR"
	EnvTLSCertFile     = "STAGESUB_TLS_CERT_FILE"
	EnvTLSKeyFile      = "STAGESUB_TLS_KEY_FILE"
	EnvTrustedProxies  = "STAGESUB_TRUSTED_PROXIES"
	EnvApexRedirect    = "STAGESUB_APEX_REDIRECT"
	EnvReadHeader      = "STAGESUB_ROUTER_READ_HEADER_TIMEOUT"
	EnvIdle            = "STAGESUB_ROUTER_IDLE_TIMEOUT"
	EnvUpstreamTimeout = "STAGESUB_ROUTER_UPSTREAM_TIMEOUT"
	EnvDialTimeout     = "STAGESUB_ROUTER_DIAL_TIMEOUT"
	EnvNoInstanceWait  = "STAGESUB_ROUTER_NO_INSTANCE_WAIT"
	EnvDrainTimeout    = "STAGESUB_ROUTER_DRAIN_TIMEOUT"
	EnvStartWait       = "STAGESUB_ROUTER_START_WAIT"
	EnvMaxHeaderBytes  = "STAGESUB_ROUTER_MAX_HEADER_BYTES"
	EnvMaxBodyBytes    = "STAGESUB_ROUTER_MAX_BODY_BYTES"
	EnvRetryBodyBytes  = "STAGESUB_ROUTER_RETRY_BODY_BYTES"
	EnvMaxAttempts     = "STAGESUB_ROUTER_MAX_ATTEMPTS"
	EnvAccessLog       = "STAGESUB_ACCESS_LOG"
	EnvLogLevel        = "STAGESUB_LOG_LEVEL"
	// EnvBlockPaths lists, comma-separated, the paths never proxied
	// (proxy.Config.BlockPaths). Unset: proxy.DefaultBlockPaths; set but
	// empty: none.
	EnvBlockPaths = "STAGESUB_ROUTER_BLOCK_PATHS"
	// EnvCAUnconstrained, "true", creates a new internal CA without name
	// constraints (so custom-domain certificates verify); an existing CA is
	// used as it is.
	EnvCAUnconstrained = "STAGESUB_INTERNAL_CA_UNCONSTRAINED"
)

// Config is the router's configuration, from the environment with flags
// overriding (flag names in Load).
type Config struct {
	BaseDomain     string
	HTTPAddr       string // plain HTTP; redirects to HTTPS when TLS is on
	HTTPSAddr      string // unused when TLSMode is off
	AdminAddr      string // /healthz and /metrics
	Advertise      string // host registered in Consul; default the admin listener's host
	Register       bool   // register as stagesub-router in Consul
	TLSMode        router.TLSMode
	StateDir       string
	TLSDir         string // internal CA directory; default StateDir/tls
	TLSCertFile    string
	TLSKeyFile     string
	ConsulAddr     string
	ConsulToken    string
	TrustedProxies []netip.Prefix
	ApexRedirect   string
	// BlockPaths are cleaned absolute paths never proxied; empty blocks none.
	BlockPaths []string
	// CAUnconstrained creates a new internal CA without name constraints.
	CAUnconstrained bool

	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	UpstreamTimeout   time.Duration
	DialTimeout       time.Duration
	NoInstanceWait    time.Duration
	DrainTimeout      time.Duration
	StartWait         time.Duration
	MaxHeaderBytes    int
	MaxBodyBytes      int64
	RetryBodyBytes    int64
	MaxAttempts       int
	AccessLog         bool
	LogLevel          string
}

// Load parses environ ("KEY=value" strings) and then args (flags). It is
// pure: it reads no files and no process state.
func Load(args, environ []string) (Config, error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	get := func(k, def string) string {
		if v, ok := env[k]; ok && v != "" {
			return v
		}
		return def
	}
	var c Config
	var errs []string
	dur := func(k string, def time.Duration) time.Duration {
		d, err := time.ParseDuration(get(k, def.String()))
		if err != nil || d < 0 {
			errs = append(errs, fmt.Sprintf("%s: invalid duration %q", k, get(k, "")))
		}
		return d
	}
	num := func(k string, def int64) int64 {
		n, err := strconv.ParseInt(get(k, strconv.FormatInt(def, 10)), 10, 64)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Sprintf("%s: invalid number %q", k, get(k, "")))
		}
		return n
	}
	boolean := func(k string, def bool) bool {
		b, err := strconv.ParseBool(get(k, strconv.FormatBool(def)))
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: invalid boolean %q", k, get(k, "")))
		}
		return b
	}

	fs := flag.NewFlagSet("stagesub-router", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.BaseDomain, "base-domain", get(registry.EnvBaseDomain, ""), "base domain ("+registry.EnvBaseDomain+")")
	fs.StringVar(&c.HTTPAddr, "http", get(EnvHTTPAddr, "127.0.0.1:8080"), "HTTP listen address ("+EnvHTTPAddr+")")
	fs.StringVar(&c.HTTPSAddr, "https", get(EnvHTTPSAddr, "127.0.0.1:8443"), "HTTPS listen address ("+EnvHTTPSAddr+")")
	fs.StringVar(&c.AdminAddr, "admin", get(EnvAdminAddr, "127.0.0.1:9180"), "health and metrics listen address ("+EnvAdminAddr+")")
	fs.StringVar(&c.Advertise, "advertise", get(EnvAdvertise, ""), "host registered in Consul ("+EnvAdvertise+")")
	fs.BoolVar(&c.Register, "register", boolean(EnvRegister, true), "register in Consul ("+EnvRegister+")")
	mode := fs.String("tls", get(EnvTLSMode, string(router.TLSInternal)), "TLS mode internal|files|acme|off ("+EnvTLSMode+")")
	fs.StringVar(&c.StateDir, "state-dir", get(EnvStateDir, ".stagesub"), "local state directory ("+EnvStateDir+")")
	fs.StringVar(&c.TLSDir, "tls-dir", get(EnvTLSDir, ""), "internal CA directory ("+EnvTLSDir+", default <state-dir>/tls)")
	fs.StringVar(&c.TLSCertFile, "tls-cert", get(EnvTLSCertFile, ""), "certificate PEM for -tls=files ("+EnvTLSCertFile+")")
	fs.StringVar(&c.TLSKeyFile, "tls-key", get(EnvTLSKeyFile, ""), "key PEM for -tls=files ("+EnvTLSKeyFile+")")
	fs.StringVar(&c.ConsulAddr, "consul", get(registry.EnvConsulAddr, "127.0.0.1:8500"), "Consul address ("+registry.EnvConsulAddr+")")
	c.ConsulToken = get(registry.EnvConsulToken, "")
	trusted := fs.String("trusted-proxies", get(EnvTrustedProxies, ""), "comma-separated CIDRs ("+EnvTrustedProxies+")")
	fs.StringVar(&c.ApexRedirect, "apex-redirect", get(EnvApexRedirect, ""), "URL for the apex and www ("+EnvApexRedirect+")")
	// Unlike the other variables, set-but-empty means something here: none.
	blockDef, ok := env[EnvBlockPaths]
	if !ok {
		blockDef = strings.Join(proxy.DefaultBlockPaths, ",")
	}
	block := fs.String("block-paths", blockDef, "comma-separated paths never proxied, \"\" = none ("+EnvBlockPaths+")")
	fs.BoolVar(&c.CAUnconstrained, "internal-ca-unconstrained", boolean(EnvCAUnconstrained, false), "create the internal CA without name constraints ("+EnvCAUnconstrained+")")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", dur(EnvReadHeader, 10*time.Second), "("+EnvReadHeader+")")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", dur(EnvIdle, 120*time.Second), "("+EnvIdle+")")
	fs.DurationVar(&c.UpstreamTimeout, "upstream-timeout", dur(EnvUpstreamTimeout, 60*time.Second), "("+EnvUpstreamTimeout+")")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", dur(EnvDialTimeout, 2*time.Second), "("+EnvDialTimeout+")")
	fs.DurationVar(&c.NoInstanceWait, "no-instance-wait", dur(EnvNoInstanceWait, 2*time.Second), "("+EnvNoInstanceWait+")")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", dur(EnvDrainTimeout, 25*time.Second), "("+EnvDrainTimeout+")")
	fs.DurationVar(&c.StartWait, "start-wait", dur(EnvStartWait, 10*time.Second), "("+EnvStartWait+")")
	maxHeader := fs.Int64("max-header-bytes", num(EnvMaxHeaderBytes, 64<<10), "("+EnvMaxHeaderBytes+")")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", num(EnvMaxBodyBytes, 0), "0 = no limit ("+EnvMaxBodyBytes+")")
	fs.Int64Var(&c.RetryBodyBytes, "retry-body-bytes", num(EnvRetryBodyBytes, 64<<10), "("+EnvRetryBodyBytes+")")
	attempts := fs.Int64("max-attempts", num(EnvMaxAttempts, 3), "("+EnvMaxAttempts+")")
	fs.BoolVar(&c.AccessLog, "access-log", boolean(EnvAccessLog, true), "("+EnvAccessLog+")")
	fs.StringVar(&c.LogLevel, "log-level", get(EnvLogLevel, "info"), "debug|info|warn|error ("+EnvLogLevel+")")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("stagesub-router: %w", err)
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("stagesub-router: %s", strings.Join(errs, "; "))
	}
	c.MaxHeaderBytes, c.MaxAttempts = int(*maxHeader), int(*attempts)
	var err error
	if c.TLSMode, err = router.ParseTLSMode(*mode); err != nil {
		return c, err
	}
	if c.BaseDomain == "" {
		return c, fmt.Errorf("stagesub-router: %s (or -base-domain) is required", registry.EnvBaseDomain)
	}
	if c.TLSDir == "" {
		c.TLSDir = filepath.Join(c.StateDir, "tls")
	}
	if c.TLSMode == router.TLSFiles && (c.TLSCertFile == "" || c.TLSKeyFile == "") {
		return c, fmt.Errorf("stagesub-router: TLS mode files needs %s and %s", EnvTLSCertFile, EnvTLSKeyFile)
	}
	for _, p := range strings.Split(*block, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !strings.HasPrefix(p, "/") {
			return c, fmt.Errorf("stagesub-router: %s: %q is not an absolute path", EnvBlockPaths, p)
		}
		c.BlockPaths = append(c.BlockPaths, proxy.CleanPath(p))
	}
	for _, s := range strings.Split(*trusted, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return c, fmt.Errorf("stagesub-router: %s: %w", EnvTrustedProxies, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.TrustedProxies = append(c.TrustedProxies, p.Masked())
	}
	return c, nil
}
