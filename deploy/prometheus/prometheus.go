// Package prometheus holds StageSub's Prometheus deployment assets (the
// scrape configuration, alert rules and their unit tests, embedded from this
// directory) and the Consul-to-HTTP-SD bridge behind `stagesubctl
// prometheus-sd`.
//
// The scrape configuration finds every process through Consul. Upstream
// Prometheus does that with consul_sd_configs. Debian's prometheus package is
// built without Consul discovery, so the same configuration is also rendered
// with http_sd_configs pointing at SDHandler, which reads the Consul catalog
// and labels targets with the very __meta_consul_* names consul_sd uses: the
// relabelling, and so every series' labels, are identical in both variants.
package prometheus

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
)

//go:embed prometheus.yml.tmpl alerts.yml alerts_test.yml
var files embed.FS

// Rules returns the alert rules file (alerts.yml).
func Rules() []byte { return mustRead("alerts.yml") }

// RulesTest returns the promtool unit tests of the alert rules (alerts_test.yml).
func RulesTest() []byte { return mustRead("alerts_test.yml") }

func mustRead(name string) []byte {
	b, err := files.ReadFile(name)
	if err != nil {
		panic(err) // embedded at build time; cannot fail
	}
	return b
}

// Discovery modes for Options.Discovery.
const (
	DiscoveryConsul = "consul" // consul_sd_configs against the Consul agent
	DiscoveryHTTP   = "http"   // http_sd_configs against SDHandler
)

// Options are the templated parts of the scrape configuration. The zero
// value renders the production consul_sd_configs variant.
type Options struct {
	Discovery       string        // DiscoveryConsul (default) or DiscoveryHTTP
	ConsulAddr      string        // default "127.0.0.1:8500", the local agent
	SDURL           string        // HTTP SD bridge URL; default "http://127.0.0.1:9099/v1/sd"
	RulesFile       string        // default "alerts.yml" (relative to the config file)
	ScrapeInterval  time.Duration // default 15s
	RefreshInterval time.Duration // default 15s
	// ConsulToken, when set, is rendered as `token` in every
	// consul_sd_configs entry: the ACL token of policy stagesub-prometheus
	// (deploy/consul-acl/prometheus.hcl). Empty omits the key (Consul
	// without ACLs, or the agent's default token). The rendered file then
	// holds a secret: keep it readable by Prometheus only. DiscoveryHTTP
	// ignores it; the bridge reads CONSUL_HTTP_TOKEN.
	ConsulToken string
}

// Defaults for Options.
const (
	DefaultConsulAddr = "127.0.0.1:8500"
	DefaultSDURL      = "http://127.0.0.1:9099/v1/sd"
)

type job struct {
	Service string
	Tenant  bool // relabel Meta.tenant to label tenant and keep only such targets
}

// Render returns the Prometheus configuration for o.
func Render(o Options) ([]byte, error) {
	if o.Discovery == "" {
		o.Discovery = DiscoveryConsul
	}
	if o.Discovery != DiscoveryConsul && o.Discovery != DiscoveryHTTP {
		return nil, fmt.Errorf("prometheus: unknown discovery %q", o.Discovery)
	}
	if o.ConsulAddr == "" {
		o.ConsulAddr = DefaultConsulAddr
	}
	if o.SDURL == "" {
		o.SDURL = DefaultSDURL
	}
	if o.RulesFile == "" {
		o.RulesFile = "alerts.yml"
	}
	if o.ScrapeInterval == 0 {
		o.ScrapeInterval = 15 * time.Second
	}
	if o.RefreshInterval == 0 {
		o.RefreshInterval = 15 * time.Second
	}
	tmpl, err := template.New("prometheus.yml.tmpl").ParseFS(files, "prometheus.yml.tmpl")
	if err != nil {
		return nil, fmt.Errorf("prometheus: parse template: %w", err)
	}
	// A JSON string is a valid YAML double-quoted scalar: any token renders
	// safely quoted.
	token := ""
	if o.ConsulToken != "" {
		b, err := json.Marshal(o.ConsulToken)
		if err != nil {
			return nil, fmt.Errorf("prometheus: quote consul token: %w", err)
		}
		token = string(b)
	}
	data := struct {
		Discovery, ConsulAddr, SDURL, RulesFile string
		ConsulToken                             string // quoted; "" = omitted
		ScrapeInterval, ScrapeTimeout           string
		RefreshInterval                         string
		Jobs                                    []job
	}{
		Discovery: o.Discovery, ConsulAddr: o.ConsulAddr, SDURL: o.SDURL, RulesFile: o.RulesFile,
		ConsulToken:    token,
		ScrapeInterval: promDuration(o.ScrapeInterval), ScrapeTimeout: promDuration(min(o.ScrapeInterval, 5*time.Second)),
		RefreshInterval: promDuration(o.RefreshInterval),
		Jobs: []job{
			{Service: registry.ServiceApp, Tenant: true},
			{Service: registry.ServiceRouter},
			{Service: registry.ServiceAdmin},
		},
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("prometheus: render: %w", err)
	}
	return buf.Bytes(), nil
}

// promDuration formats d the way Prometheus parses it ("15s", "500ms", "2m").
func promDuration(d time.Duration) string {
	switch {
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	default:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
}

// TargetGroup is one entry of a Prometheus HTTP SD answer.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// SDHandler serves Prometheus HTTP service discovery from the Consul catalog:
// GET ?service=<name> answers one target group per instance of that service
// (one of the three StageSub services; all three without the parameter),
// labelled like consul_sd_configs does (__meta_consul_service,
// __meta_consul_service_id, __meta_consul_node, __meta_consul_tags,
// __meta_consul_health, __meta_consul_service_metadata_<key>, ...).
// Instances of every health are listed, as consul_sd does; `up` tells.
//
// It asks Consul on every request (Prometheus polls every refresh_interval)
// and answers 502 when Consul fails, so Prometheus keeps its last targets.
func SDHandler(c *api.Client, log *slog.Logger) http.Handler {
	all := []string{registry.ServiceApp, registry.ServiceRouter, registry.ServiceAdmin}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		services := all
		if s := r.URL.Query().Get("service"); s != "" {
			if s != registry.ServiceApp && s != registry.ServiceRouter && s != registry.ServiceAdmin {
				http.Error(w, "unknown service", http.StatusNotFound)
				return
			}
			services = []string{s}
		}
		groups := []TargetGroup{}
		for _, s := range services {
			g, err := serviceGroups(r, c, s)
			if err != nil {
				log.Warn("prometheus-sd: consul query failed", "service", s, "err", err)
				http.Error(w, "consul: "+err.Error(), http.StatusBadGateway)
				return
			}
			groups = append(groups, g...)
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(groups); err != nil {
			log.Debug("prometheus-sd: write", "err", err)
		}
	})
}

func serviceGroups(r *http.Request, c *api.Client, service string) ([]TargetGroup, error) {
	q := (&api.QueryOptions{AllowStale: true}).WithContext(r.Context())
	entries, _, err := c.Health().Service(service, "", false, q)
	if err != nil {
		return nil, fmt.Errorf("health of %s: %w", service, err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Service.ID < entries[j].Service.ID })
	groups := make([]TargetGroup, 0, len(entries))
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		target := addr + ":" + strconv.Itoa(e.Service.Port)
		if strings.Contains(addr, ":") {
			target = "[" + addr + "]:" + strconv.Itoa(e.Service.Port)
		}
		l := map[string]string{
			"__meta_consul_address":         e.Node.Address,
			"__meta_consul_dc":              e.Node.Datacenter,
			"__meta_consul_health":          e.Checks.AggregatedStatus(),
			"__meta_consul_node":            e.Node.Node,
			"__meta_consul_service":         e.Service.Service,
			"__meta_consul_service_address": e.Service.Address,
			"__meta_consul_service_id":      e.Service.ID,
			"__meta_consul_service_port":    strconv.Itoa(e.Service.Port),
			"__meta_consul_tags":            "," + strings.Join(e.Service.Tags, ",") + ",",
		}
		for k, v := range e.Service.Meta {
			l["__meta_consul_service_metadata_"+labelName(k)] = v
		}
		groups = append(groups, TargetGroup{Targets: []string{target}, Labels: l})
	}
	return groups, nil
}

// labelName maps a Meta key to a valid label name part, like Prometheus'
// strutil.SanitizeLabelName.
func labelName(k string) string {
	b := []byte(k)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' && i > 0) {
			b[i] = '_'
		}
	}
	return string(b)
}

// RunSD runs the HTTP SD bridge until ctx is done: `stagesubctl
// prometheus-sd [--listen 127.0.0.1:9099]`. Consul comes from the standard
// environment (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN) in environ. It prints
// "prometheus-sd listening on http://ADDR/v1/sd" to stdout once it listens.
func RunSD(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("prometheus-sd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9099", "address to serve Prometheus HTTP SD on (path /v1/sd)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := api.DefaultConfig()
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case registry.EnvConsulAddr:
			cfg.Address = v
		case registry.EnvConsulToken:
			cfg.Token = v
		}
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("prometheus-sd: consul client: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("prometheus-sd: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/sd", SDHandler(client, log))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stdout, "prometheus-sd listening on http://%s/v1/sd\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("prometheus-sd: %w", err)
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			return fmt.Errorf("prometheus-sd: shutdown: %w", err)
		}
		return nil
	}
}
