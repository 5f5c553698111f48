package prometheus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"stagesub.dev/deploy/prometheus"
	"stagesub.dev/internal/needbin"
	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
	"stagesub.dev/registry/consuldev"
)

// envUpstreamDir names the directory holding upstream prometheus and
// promtool (built with consul_sd_configs by scripts/build-prometheus;
// scripts/test sets it).
const envUpstreamDir = "STAGESUB_PROMETHEUS_UPSTREAM_DIR"

// upstreamBinary returns the path of the upstream Prometheus binary name. It
// skips the test when envUpstreamDir is unset, but fails it when needbin.Required().
func upstreamBinary(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv(envUpstreamDir)
	if dir == "" {
		needbin.Missing(t, fmt.Sprintf("%s is not set; `export %s=$(scripts/build-prometheus)` runs the upstream Prometheus tests", envUpstreamDir, envUpstreamDir))
	}
	p := filepath.Join(dir, name)
	if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s=%s: no executable %s there (%v); run scripts/build-prometheus", envUpstreamDir, dir, name, err)
	}
	return p
}

// TestUpstreamPromtoolCheckConfig checks the checked-in configurations, as
// they are (consul_sd_configs included), with upstream promtool.
func TestUpstreamPromtoolCheckConfig(t *testing.T) {
	promtool := upstreamBinary(t, "promtool")
	for name := range checkedIn {
		t.Run(name, func(t *testing.T) {
			// In this directory, so rule_files finds the real alerts.yml.
			out, err := exec.Command(promtool, "check", "config", name).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "SUCCESS") {
				t.Fatalf("upstream promtool check config %s: %v\n%s", name, err, out)
			}
		})
	}
}

// TestUpstreamPromtoolTestRules runs the alert rule unit tests with upstream
// promtool.
func TestUpstreamPromtoolTestRules(t *testing.T) {
	promtool := upstreamBinary(t, "promtool")
	if out, err := exec.Command(promtool, "check", "rules", "alerts.yml").CombinedOutput(); err != nil {
		t.Fatalf("upstream promtool check rules: %v\n%s", err, out)
	}
	out, err := exec.Command(promtool, "test", "rules", "alerts_test.yml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("upstream promtool test rules: %v\n%s", err, out)
	}
}

// metricsServer is a stand-in StageSub process: /healthz for the Consul
// check and /metrics in the Prometheus text format (with the Content-Type
// Prometheus 3 insists on).
func metricsServer(t *testing.T) (*httptest.Server, int) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		io.WriteString(w, "# HELP stagesub_upstream_probe Served by the upstream Prometheus test.\n# TYPE stagesub_upstream_probe gauge\nstagesub_upstream_probe 1\n")
	})
	srv := httptest.NewServer(mux) // 127.0.0.1
	t.Cleanup(srv.Close)
	return srv, srv.Listener.Addr().(*net.TCPAddr).Port
}

// freeLoopbackAddr returns a 127.0.0.1 address with a port that was free a
// moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// promSample is one element of a Prometheus instant query vector.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func promQuery(ctx context.Context, base, q string) ([]promSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("query %s: status %d: %w", q, resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, r.Error)
	}
	return r.Data.Result, nil
}

// TestUpstreamPrometheusConsulSD runs upstream Prometheus on the production
// configuration (Render with the Consul address of a stand-in and short
// intervals; everything else is prometheus.yml) and waits until it has found
// and scraped, through consul_sd_configs, two tenants' app instances and a
// router and an admin instance registered the way the processes register.
func TestUpstreamPrometheusConsulSD(t *testing.T) {
	promBin := upstreamBinary(t, "prometheus")
	cs := consuldev.StartTest(t, consuldev.Config{})
	client := cs.Client(t)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// service, tenant -> registered instance ID
	type instance struct{ service, tenant, id string }
	instances := []*instance{
		{service: registry.ServiceApp, tenant: "goteborg"},
		{service: registry.ServiceApp, tenant: "malmo"},
		{service: registry.ServiceRouter},
		{service: registry.ServiceAdmin},
	}
	for _, in := range instances {
		_, port := metricsServer(t)
		id, deregister, err := consul.Register(ctx, client, registry.Registration{
			Service: in.service, Tenant: in.tenant, Address: "127.0.0.1", Port: port,
			Version: "upstream-test", CheckInterval: 500 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		in.id = id
		t.Cleanup(func() { deregister(context.Background()) })
	}

	dir := t.TempDir()
	cfg, err := prometheus.Render(prometheus.Options{
		Discovery:       prometheus.DiscoveryConsul,
		ConsulAddr:      cs.Addr(),
		ScrapeInterval:  time.Second,
		RefreshInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "consul_sd_configs:") || strings.Contains(string(cfg), "http_sd_configs:") {
		t.Fatalf("rendered configuration is not the consul_sd variant:\n%s", cfg)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), prometheus.Rules(), 0o644); err != nil {
		t.Fatal(err)
	}

	listen := freeLoopbackAddr(t)
	base := "http://" + listen
	logs := &syncbuf.Buffer{}
	cmd := exec.Command(promBin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen,
		"--log.level=info",
	)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	fail := func(format string, args ...any) {
		t.Helper()
		targets := ""
		if resp, err := http.Get(base + "/api/v1/targets"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			targets = string(b)
		}
		t.Fatalf(format+"\n/api/v1/targets: %s\nprometheus log:\n%s", append(args, targets, logs.String())...)
	}

	// Bounded: Prometheus starts in a few seconds, discovers within a
	// refresh interval (1s) and scrapes every second.
	const wait = 60 * time.Second
	deadline := time.Now().Add(wait)
	var missing []string
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			fail("prometheus exited: %v", err)
		default:
		}
		missing = missing[:0]
		up, err := promQuery(ctx, base, "up")
		probes, err2 := promQuery(ctx, base, "stagesub_upstream_probe")
		if err == nil {
			err = err2
		}
		if err != nil {
			missing = append(missing, err.Error())
		} else {
			for _, in := range instances {
				if !hasSample(up, in.service, in.tenant, in.id, "1") {
					missing = append(missing, fmt.Sprintf("up{job=%q,tenant=%q,instance_id=%q} == 1", in.service, in.tenant, in.id))
				}
				// Scraped series carry the relabelled labels too.
				if !hasSample(probes, in.service, in.tenant, in.id, "1") {
					missing = append(missing, fmt.Sprintf("stagesub_upstream_probe{job=%q,tenant=%q,instance_id=%q}", in.service, in.tenant, in.id))
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			fail("after %v upstream Prometheus still lacks:\n  %s", wait, strings.Join(missing, "\n  "))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("upstream Prometheus found all %d instances through consul_sd_configs", len(instances))
}

// hasSample reports whether samples holds a series of job service (with
// label tenant for apps, none otherwise), instance_id id, version
// "upstream-test" and value want.
func hasSample(samples []promSample, service, tenant, id, want string) bool {
	for _, s := range samples {
		m := s.Metric
		if m["job"] != service || m["tenant"] != tenant || m["instance_id"] != id || m["version"] != "upstream-test" || m["node"] == "" {
			continue
		}
		if v, _ := s.Value[1].(string); v == want {
			return true
		}
	}
	return false
}
