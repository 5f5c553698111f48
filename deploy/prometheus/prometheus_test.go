package prometheus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"gopkg.in/yaml.v3"

	"stagesub.dev/deploy/prometheus"
	"stagesub.dev/internal/needbin"
	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry/consuldev"
)

var update = flag.Bool("update", false, "rewrite the checked-in configuration files from the template")

// checkedIn maps each checked-in file to the options that render it.
var checkedIn = map[string]prometheus.Options{
	"prometheus.yml":         {Discovery: prometheus.DiscoveryConsul},
	"prometheus-http-sd.yml": {Discovery: prometheus.DiscoveryHTTP},
}

func TestCheckedInFilesUpToDate(t *testing.T) {
	for name, o := range checkedIn {
		want, err := prometheus.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(name, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from Render(%+v); run `go test ./prometheus -update` in deploy/", name, o)
		}
	}
}

func TestRenderErrUnknownDiscovery(t *testing.T) {
	if _, err := prometheus.Render(prometheus.Options{Discovery: "dns"}); err == nil {
		t.Fatal("Render with unknown discovery: no error")
	}
}

// scrapeConfig is the part of a Prometheus configuration the tests inspect.
type scrapeConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName string `yaml:"job_name"`
		Consul  []struct {
			Server   string   `yaml:"server"`
			Services []string `yaml:"services"`
		} `yaml:"consul_sd_configs"`
		HTTP []struct {
			URL string `yaml:"url"`
		} `yaml:"http_sd_configs"`
		Relabel []struct {
			SourceLabels []string `yaml:"source_labels"`
			TargetLabel  string   `yaml:"target_label"`
			Action       string   `yaml:"action"`
		} `yaml:"relabel_configs"`
	} `yaml:"scrape_configs"`
}

func TestConfigShape(t *testing.T) {
	for name, o := range checkedIn {
		t.Run(name, func(t *testing.T) {
			b, err := prometheus.Render(o)
			if err != nil {
				t.Fatal(err)
			}
			var c scrapeConfig
			if err := yaml.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			if got, want := len(c.ScrapeConfigs), 3; got != want {
				t.Fatalf("%d scrape configs, want %d", got, want)
			}
			for _, sc := range c.ScrapeConfigs {
				switch o.Discovery {
				case prometheus.DiscoveryConsul:
					if len(sc.Consul) != 1 || len(sc.Consul[0].Services) != 1 || sc.Consul[0].Services[0] != sc.JobName ||
						sc.Consul[0].Server != prometheus.DefaultConsulAddr {
						t.Errorf("job %s: consul_sd_configs = %+v", sc.JobName, sc.Consul)
					}
				case prometheus.DiscoveryHTTP:
					if len(sc.HTTP) != 1 || sc.HTTP[0].URL != prometheus.DefaultSDURL+"?service="+sc.JobName {
						t.Errorf("job %s: http_sd_configs = %+v", sc.JobName, sc.HTTP)
					}
				}
				relabelsTenant := false
				for _, r := range sc.Relabel {
					if len(r.SourceLabels) == 1 && r.SourceLabels[0] == "__meta_consul_service_metadata_tenant" && r.TargetLabel == "tenant" {
						relabelsTenant = true
					}
				}
				if got, want := relabelsTenant, sc.JobName == "stagesub-app"; got != want {
					t.Errorf("job %s relabels Meta.tenant to tenant: %v, want %v", sc.JobName, got, want)
				}
			}
		})
	}
}

// TestPromtoolCheckConfig runs `promtool check config` on both variants.
// Debian's promtool is built without Consul discovery: for the consul_sd
// variant it must then fail for exactly that reason and nothing else.
func TestPromtoolCheckConfig(t *testing.T) {
	promtool := needbin.Path(t, "promtool", "apt-get install prometheus")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), prometheus.Rules(), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, o := range checkedIn {
		t.Run(name, func(t *testing.T) {
			b, err := prometheus.Render(o)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(promtool, "check", "config", path).CombinedOutput()
			if err == nil {
				if !strings.Contains(string(out), "SUCCESS") {
					t.Errorf("promtool check config: %s", out)
				}
				return
			}
			if o.Discovery == prometheus.DiscoveryConsul && withoutConsulSD(string(out)) {
				t.Logf("this promtool lacks consul_sd_configs (Debian build); checking the config with consul_sd swapped for static_configs")
				swapped := swapConsulSD(t, b)
				p2 := filepath.Join(dir, "swapped-"+name)
				if err := os.WriteFile(p2, swapped, 0o644); err != nil {
					t.Fatal(err)
				}
				if out, err := exec.Command(promtool, "check", "config", p2).CombinedOutput(); err != nil {
					t.Errorf("promtool check config (consul_sd swapped): %v\n%s", err, out)
				}
				return
			}
			t.Errorf("promtool check config %s: %v\n%s", name, err, out)
		})
	}
}

// withoutConsulSD reports whether promtool's only complaint is that it does
// not know consul_sd_configs.
func withoutConsulSD(out string) bool {
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "line ") && !strings.Contains(l, "field consul_sd_configs not found") {
			return false
		}
	}
	return strings.Contains(out, "field consul_sd_configs not found")
}

// swapConsulSD replaces every consul_sd_configs block with an equivalent
// static_configs block, keeping everything else of the configuration.
func swapConsulSD(t *testing.T, b []byte) []byte {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, sc := range doc["scrape_configs"].([]any) {
		m := sc.(map[string]any)
		if _, ok := m["consul_sd_configs"]; !ok {
			t.Fatalf("job %v has no consul_sd_configs", m["job_name"])
		}
		delete(m, "consul_sd_configs")
		m["static_configs"] = []any{map[string]any{"targets": []any{"127.0.0.1:1"}}}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPromtoolRules(t *testing.T) {
	promtool := needbin.Path(t, "promtool", "apt-get install prometheus")
	dir := t.TempDir()
	for name, b := range map[string][]byte{"alerts.yml": prometheus.Rules(), "alerts_test.yml": prometheus.RulesTest()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("Check", func(t *testing.T) {
		out, err := exec.Command(promtool, "check", "rules", filepath.Join(dir, "alerts.yml")).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool check rules: %v\n%s", err, out)
		}
		for _, alert := range []string{"StageSubTenantDown", "StageSubTenant5xxRate", "StageSubCertificateExpiry", "StageSubRegistrySnapshotStale"} {
			if !bytes.Contains(prometheus.Rules(), []byte("alert: "+alert)) {
				t.Errorf("alerts.yml has no alert %s", alert)
			}
		}
	})
	t.Run("Test", func(t *testing.T) {
		cmd := exec.Command(promtool, "test", "rules", "alerts_test.yml")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Fatalf("promtool test rules: %v\n%s", err, out)
		}
	})
}

func TestSDHandler(t *testing.T) {
	srv := consuldev.StartTest(t, consuldev.Config{HTTPAddr: "127.0.0.1:0"})
	c := srv.Client(t)
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(health.Close)
	regs := []*api.AgentServiceRegistration{
		{ID: "app-goteborg-1", Name: "stagesub-app", Address: "127.0.0.1", Port: 4001,
			Tags: []string{"tenant-goteborg"}, Meta: map[string]string{"tenant": "goteborg", "version": "v1"}},
		{ID: "app-malmo-1", Name: "stagesub-app", Address: "127.0.0.1", Port: 4002,
			Tags: []string{"tenant-malmo"}, Meta: map[string]string{"tenant": "malmo"}},
		{ID: "router-1", Name: "stagesub-router", Address: "127.0.0.1", Port: 8081},
		{ID: "other-1", Name: "something-else", Address: "127.0.0.1", Port: 9},
	}
	for _, r := range regs {
		if err := c.Agent().ServiceRegister(r); err != nil {
			t.Fatal(err)
		}
	}
	h := httptest.NewServer(prometheus.SDHandler(c, slog.New(slog.NewTextHandler(io.Discard, nil))))
	t.Cleanup(h.Close)

	get := func(t *testing.T, query string) (int, []prometheus.TargetGroup) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.URL+"/v1/sd"+query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var groups []prometheus.TargetGroup
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&groups); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, groups
	}

	t.Run("OK", func(t *testing.T) {
		code, groups := get(t, "?service=stagesub-app")
		if code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		if got, want := len(groups), 2; got != want {
			t.Fatalf("%d groups, want %d: %+v", got, want, groups)
		}
		g := groups[0]
		if got, want := strings.Join(g.Targets, ","), "127.0.0.1:4001"; got != want {
			t.Errorf("targets = %q, want %q", got, want)
		}
		for k, want := range map[string]string{
			"__meta_consul_service":                  "stagesub-app",
			"__meta_consul_service_id":               "app-goteborg-1",
			"__meta_consul_service_metadata_tenant":  "goteborg",
			"__meta_consul_service_metadata_version": "v1",
			"__meta_consul_tags":                     ",tenant-goteborg,",
		} {
			if got := g.Labels[k]; got != want {
				t.Errorf("label %s = %q, want %q", k, got, want)
			}
		}
		if got, want := groups[1].Labels["__meta_consul_service_metadata_tenant"], "malmo"; got != want {
			t.Errorf("second group tenant = %q, want %q", got, want)
		}
	})
	t.Run("AllServices", func(t *testing.T) {
		_, groups := get(t, "")
		if got, want := len(groups), 3; got != want {
			t.Fatalf("%d groups, want %d (apps and router, not something-else): %+v", got, want, groups)
		}
	})
	t.Run("ErrUnknownService", func(t *testing.T) {
		if code, _ := get(t, "?service=something-else"); code != http.StatusNotFound {
			t.Errorf("status %d, want 404", code)
		}
	})
	t.Run("ErrConsulDown", func(t *testing.T) {
		srv.Close()
		if code, _ := get(t, "?service=stagesub-app"); code != http.StatusBadGateway {
			t.Errorf("status %d, want 502", code)
		}
	})
}

// TestRunSD runs the bridge as `stagesubctl prometheus-sd` does: it serves
// /v1/sd from the Consul of CONSUL_HTTP_ADDR and stops with its context.
func TestRunSD(t *testing.T) {
	srv := consuldev.StartTest(t, consuldev.Config{HTTPAddr: "127.0.0.1:0"})
	c := srv.Client(t)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "app-1", Name: "stagesub-app",
		Address: "127.0.0.1", Port: 4001, Meta: map[string]string{"tenant": "goteborg"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- prometheus.RunSD(ctx, []string{"--listen", "127.0.0.1:0"}, []string{"CONSUL_HTTP_ADDR=" + srv.Addr()}, out, io.Discard)
	}()
	var url string
	deadline := time.Now().Add(10 * time.Second)
	for url == "" {
		if _, rest, ok := strings.Cut(out.String(), "listening on "); ok {
			url = strings.TrimSpace(rest)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening line: %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get(url + "?service=stagesub-app")
	if err != nil {
		t.Fatal(err)
	}
	var groups []prometheus.TargetGroup
	err = json.NewDecoder(resp.Body).Decode(&groups)
	resp.Body.Close()
	if err != nil || len(groups) != 1 || groups[0].Labels["__meta_consul_service_metadata_tenant"] != "goteborg" {
		t.Errorf("groups %+v (%v)", groups, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunSD after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunSD did not stop")
	}
	t.Run("ErrBadFlag", func(t *testing.T) {
		if err := prometheus.RunSD(context.Background(), []string{"--nope"}, nil, io.Discard, io.Discard); err == nil {
			t.Error("no error")
		}
	})
}

// TestRenderConsulToken: Options.ConsulToken becomes `token` of every
// consul_sd_configs entry, safely quoted, and is omitted when empty.
func TestRenderConsulToken(t *testing.T) {
	tests := []struct {
		name      string
		o         prometheus.Options
		wantToken string // in every consul_sd_configs entry; "" = no token key
		wantJobs  int    // jobs with consul_sd_configs
	}{
		{"no token", prometheus.Options{}, "", 3},
		{"token", prometheus.Options{ConsulToken: "0b7b5f2e-6e1c-4d9a-9b1e-2c1f5d0e9a11"}, "0b7b5f2e-6e1c-4d9a-9b1e-2c1f5d0e9a11", 3},
		{"token needing quotes", prometheus.Options{ConsulToken: `a: "b" #c`}, `a: "b" #c`, 3},
		{"http discovery ignores it", prometheus.Options{Discovery: prometheus.DiscoveryHTTP, ConsulToken: "t"}, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := prometheus.Render(tt.o)
			if err != nil {
				t.Fatal(err)
			}
			var c struct {
				ScrapeConfigs []struct {
					JobName string           `yaml:"job_name"`
					Consul  []map[string]any `yaml:"consul_sd_configs"`
				} `yaml:"scrape_configs"`
			}
			if err := yaml.Unmarshal(b, &c); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			jobs := 0
			for _, sc := range c.ScrapeConfigs {
				for _, e := range sc.Consul {
					jobs++
					got, ok := e["token"]
					switch {
					case tt.wantToken == "" && ok:
						t.Errorf("job %s: token = %v, want no token key", sc.JobName, got)
					case tt.wantToken != "" && got != tt.wantToken:
						t.Errorf("job %s: token = %v, want %q", sc.JobName, got, tt.wantToken)
					}
				}
			}
			if got, want := jobs, tt.wantJobs; got != want {
				t.Errorf("%d consul_sd_configs entries, want %d", got, want)
			}
			if tt.o.ConsulToken != "" && tt.o.Discovery == prometheus.DiscoveryHTTP && bytes.Contains(b, []byte("token")) {
				t.Errorf("http variant mentions the token:\n%s", b)
			}
		})
	}
}
