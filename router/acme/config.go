package acme

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// Environment variable names read by Load.
const (
	EnvCA      = "STAGESUB_ACME_CA"       // ACME directory URL; Let's Encrypt by default
	EnvStaging = "STAGESUB_ACME_STAGING"  // "true": Let's Encrypt staging (when EnvCA is unset)
	EnvEmail   = "STAGESUB_ACME_EMAIL"    // account email (required)
	EnvAgree   = "STAGESUB_ACME_AGREE"    // "true": agree to the CA's terms (required)
	EnvCARoots = "STAGESUB_ACME_CA_ROOTS" // PEM file(s), comma-separated, trusted for the CA's HTTPS (private CA)

	EnvDNSProvider   = "STAGESUB_ACME_DNS_PROVIDER"       // "rfc2136" (default) or "exec"
	EnvRFC2136Server = "STAGESUB_ACME_RFC2136_SERVER"     // host:port of the primary
	EnvRFC2136Key    = "STAGESUB_ACME_RFC2136_KEY_NAME"   // TSIG key name
	EnvRFC2136Alg    = "STAGESUB_ACME_RFC2136_KEY_ALG"    // TSIG algorithm, default hmac-sha256
	EnvRFC2136Secret = "STAGESUB_ACME_RFC2136_KEY_SECRET" // TSIG secret, base64
	EnvExecCommand   = "STAGESUB_ACME_EXEC_COMMAND"       // executable for the exec provider
	EnvDNSResolvers  = "STAGESUB_ACME_DNS_RESOLVERS"      // host[:port],... for zone lookup and propagation checks
	EnvDNSTimeout    = "STAGESUB_ACME_DNS_TIMEOUT"        // propagation timeout, default 2m; "off" skips checks
	EnvDNSDelay      = "STAGESUB_ACME_DNS_DELAY"          // wait before propagation checks, default 0
	EnvDNSTTL        = "STAGESUB_ACME_DNS_TTL"            // TTL of challenge records, default 60s

	EnvStorage      = "STAGESUB_ACME_STORAGE"       // "file" (default) or "consul"
	EnvStorageDir   = "STAGESUB_ACME_STORAGE_DIR"   // directory for "file"
	EnvConsulPrefix = "STAGESUB_ACME_CONSUL_PREFIX" // KV prefix for "consul", default stagesub/certmagic

	EnvOnDemandLimit  = "STAGESUB_ACME_ONDEMAND_LIMIT"  // new on-demand certificates per window, default 20
	EnvOnDemandWindow = "STAGESUB_ACME_ONDEMAND_WINDOW" // default 1h
	// EnvOnDemandChallenges lists the challenge types offered for custom
	// domains, default "http-01,tls-alpn-01".
	EnvOnDemandChallenges = "STAGESUB_ACME_ONDEMAND_CHALLENGES"

	EnvHTTPPort = "STAGESUB_ACME_HTTP_PORT" // port the CA validates HTTP-01 on (the router's HTTP port), default 80
	EnvTLSPort  = "STAGESUB_ACME_TLS_PORT"  // port the CA validates TLS-ALPN-01 on (the router's HTTPS port), default 443
)

// DNS provider names.
const (
	ProviderRFC2136 = "rfc2136"
	ProviderExec    = "exec"
)

// Challenge types for on-demand certificates.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// Storage kinds.
const (
	StorageFile   = "file"
	StorageConsul = "consul"
)

// Config is the router's ACME configuration. Load fills it from the
// environment; tests build it directly. The zero value is not valid.
type Config struct {
	// CA is the ACME directory URL.
	CA string
	// Email is the ACME account email; Agreed must be true (the CA's terms).
	Email  string
	Agreed bool
	// CARoots are PEM files trusted, besides the system roots, for the CA's
	// own HTTPS endpoint (a private CA such as pebble or step-ca).
	CARoots []string

	// DNSProvider is ProviderRFC2136 or ProviderExec.
	DNSProvider string
	// RFC 2136 provider: primary server host:port and TSIG key.
	RFC2136Server, RFC2136KeyName, RFC2136KeyAlg, RFC2136Secret string
	// ExecCommand is the exec provider's executable.
	ExecCommand string
	// Resolvers (host[:port]) are asked for the zone of a name and for
	// propagation checks; empty means the system resolvers.
	Resolvers []string
	// PropagationTimeout bounds the wait for the challenge record to be
	// visible; negative skips the checks. PropagationDelay waits before the
	// first check. DNSTTL is the TTL of challenge records.
	PropagationTimeout, PropagationDelay, DNSTTL time.Duration

	// Storage is StorageFile (StorageDir, certmagic's default dir if empty)
	// or StorageConsul (ConsulPrefix in Consul KV, shared by replicas).
	Storage, StorageDir, ConsulPrefix string

	// OnDemandLimit new on-demand certificates per OnDemandWindow, across
	// all custom domains (renewals are not counted).
	OnDemandLimit  int
	OnDemandWindow time.Duration
	// OnDemandChallenges are the challenge types offered for custom
	// domains (ChallengeHTTP01, ChallengeTLSALPN01); both if empty.
	OnDemandChallenges []string

	// HTTPPort and TLSPort are where the CA connects for HTTP-01 and
	// TLS-ALPN-01: the router's public HTTP and HTTPS ports.
	HTTPPort, TLSPort int
}

// Load reads the configuration from environ ("KEY=value" strings, as from
// os.Environ()), applies defaults and validates it. It does no I/O.
func Load(environ []string) (Config, error) {
	env := make(map[string]string)
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = strings.TrimSpace(v)
		}
	}
	c := Config{
		CA:             env[EnvCA],
		Email:          env[EnvEmail],
		DNSProvider:    env[EnvDNSProvider],
		RFC2136Server:  env[EnvRFC2136Server],
		RFC2136KeyName: env[EnvRFC2136Key],
		RFC2136KeyAlg:  env[EnvRFC2136Alg],
		RFC2136Secret:  env[EnvRFC2136Secret],
		ExecCommand:    env[EnvExecCommand],
		Storage:        env[EnvStorage],
		StorageDir:     env[EnvStorageDir],
		ConsulPrefix:   env[EnvConsulPrefix],
	}
	var errs []error
	boolean := func(name string) bool {
		v := env[name]
		if v == "" {
			return false
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		return b
	}
	duration := func(name string, def time.Duration) time.Duration {
		v := env[name]
		if v == "" {
			return def
		}
		if v == "off" {
			return -1
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		return d
	}
	integer := func(name string, def int) int {
		v := env[name]
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		return n
	}
	c.Agreed = boolean(EnvAgree)
	if c.CA == "" {
		c.CA = certmagic.LetsEncryptProductionCA
		if boolean(EnvStaging) {
			c.CA = certmagic.LetsEncryptStagingCA
		}
	}
	c.CARoots = list(env[EnvCARoots])
	c.Resolvers = list(env[EnvDNSResolvers])
	c.OnDemandChallenges = list(env[EnvOnDemandChallenges])
	c.PropagationTimeout = duration(EnvDNSTimeout, 2*time.Minute)
	c.PropagationDelay = duration(EnvDNSDelay, 0)
	c.DNSTTL = duration(EnvDNSTTL, 60*time.Second)
	c.OnDemandLimit = integer(EnvOnDemandLimit, 20)
	c.OnDemandWindow = duration(EnvOnDemandWindow, time.Hour)
	c.HTTPPort = integer(EnvHTTPPort, 80)
	c.TLSPort = integer(EnvTLSPort, 443)
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("acme: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func list(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Validate fills defaults for empty fields (DNSProvider, Storage, ports,
// on-demand limits) and reports what is missing or inconsistent.
func (c *Config) Validate() error {
	if c.DNSProvider == "" {
		c.DNSProvider = ProviderRFC2136
	}
	if c.Storage == "" {
		c.Storage = StorageFile
	}
	if c.HTTPPort == 0 {
		c.HTTPPort = 80
	}
	if c.TLSPort == 0 {
		c.TLSPort = 443
	}
	if c.OnDemandLimit == 0 {
		c.OnDemandLimit = 20
	}
	if c.OnDemandWindow == 0 {
		c.OnDemandWindow = time.Hour
	}
	if len(c.OnDemandChallenges) == 0 {
		c.OnDemandChallenges = []string{ChallengeHTTP01, ChallengeTLSALPN01}
	}
	var errs []error
	for _, ch := range c.OnDemandChallenges {
		if ch != ChallengeHTTP01 && ch != ChallengeTLSALPN01 {
			errs = append(errs, fmt.Errorf("%s: unknown challenge %q (want %s or %s)", EnvOnDemandChallenges, ch, ChallengeHTTP01, ChallengeTLSALPN01))
		}
	}
	if c.CA == "" {
		errs = append(errs, fmt.Errorf("%s: the CA directory URL is required", EnvCA))
	}
	if c.Email == "" {
		errs = append(errs, fmt.Errorf("%s: an account email is required", EnvEmail))
	}
	if !c.Agreed {
		errs = append(errs, fmt.Errorf("%s: must be true to agree to the CA's terms of service", EnvAgree))
	}
	switch c.DNSProvider {
	case ProviderRFC2136:
		if c.RFC2136Server == "" || c.RFC2136KeyName == "" || c.RFC2136Secret == "" {
			errs = append(errs, fmt.Errorf("%s, %s and %s are required for the rfc2136 provider",
				EnvRFC2136Server, EnvRFC2136Key, EnvRFC2136Secret))
		}
	case ProviderExec:
		if c.ExecCommand == "" {
			errs = append(errs, fmt.Errorf("%s is required for the exec provider", EnvExecCommand))
		}
	default:
		errs = append(errs, fmt.Errorf("%s: unknown provider %q (want %s or %s)", EnvDNSProvider, c.DNSProvider, ProviderRFC2136, ProviderExec))
	}
	switch c.Storage {
	case StorageFile, StorageConsul:
	default:
		errs = append(errs, fmt.Errorf("%s: unknown storage %q (want %s or %s)", EnvStorage, c.Storage, StorageFile, StorageConsul))
	}
	if c.OnDemandLimit < 0 || c.OnDemandWindow < 0 {
		errs = append(errs, fmt.Errorf("%s and %s must not be negative", EnvOnDemandLimit, EnvOnDemandWindow))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("acme: invalid configuration: %w", err)
	}
	return nil
}
