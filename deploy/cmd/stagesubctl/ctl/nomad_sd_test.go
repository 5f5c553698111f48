package ctl_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"stagesub.dev/deploy/cmd/stagesubctl/ctl"
	"stagesub.dev/deploy/secrets"
	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
)

func TestNomadAppJob(t *testing.T) {
	f := newFixture(t)
	f.drop(t, "nomadjob")
	f.mustRun(t, "tenant", "create", "nomadjob", "--name", "Nomad Orchestra")

	var job struct {
		Job struct {
			ID         string
			TaskGroups []struct {
				Tasks []struct {
					Env map[string]string
				}
			}
		}
	}
	out := f.mustRun(t, "nomad", "app-job", "nomadjob")
	if err := json.Unmarshal([]byte(out), &job); err != nil {
		t.Fatalf("job is not JSON: %v\n%s", err, out)
	}
	if got, want := job.Job.ID, "stagesub-app-nomadjob"; got != want {
		t.Errorf("job ID = %q, want %q", got, want)
	}
	if got, want := job.Job.TaskGroups[0].Tasks[0].Env[registry.EnvTenant], "nomadjob"; got != want {
		t.Errorf("STAGESUB_TENANT = %q, want %q", got, want)
	}
	if strings.Contains(out, "postgres://") {
		t.Errorf("job contains a database URL; it must come from the Nomad Variable:\n%s", out)
	}

	var v struct {
		Path  string
		Items map[string]string
	}
	out = f.mustRun(t, "nomad", "app-job", "nomadjob", "--variable")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("variable is not JSON: %v\n%s", err, out)
	}
	env, err := secrets.Dir{Path: f.secrets}.Read("nomadjob")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := v.Items[registry.EnvDatabaseURL], env[registry.EnvDatabaseURL]; got != want || got == "" {
		t.Errorf("variable DATABASE_URL = %q, want the env file's %q", got, want)
	}
	if got, want := v.Path, "nomad/jobs/stagesub-app-nomadjob"; got != want {
		t.Errorf("variable path = %q, want %q", got, want)
	}

	if code, _, _ := f.run(t, "nomad", "app-job", "Bad_Slug"); code == 0 {
		t.Error("invalid slug: exit 0, want non-zero")
	}
}

func TestPrometheusSD(t *testing.T) {
	f := newFixture(t)
	c := f.consul.Client(t)
	_, dereg, err := consul.Register(context.Background(), c, registry.Registration{
		Service: registry.ServiceApp, Tenant: "goteborg", Address: "127.0.0.1", Port: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer dereg(context.Background())

	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncbuf.Buffer
	done := make(chan int)
	go func() {
		m := &ctl.Main{Stdout: &out, Stderr: &errb}
		done <- m.Exec(ctx, []string{"prometheus-sd", "--listen", "127.0.0.1:0"}, f.env)
	}()
	var url string
	for deadline := time.Now().Add(10 * time.Second); url == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, rest, ok := strings.Cut(out.String(), "listening on "); ok {
			url = strings.TrimSpace(rest)
		}
	}
	if url == "" {
		cancel()
		t.Fatalf("prometheus-sd did not start: %s %s", out.String(), errb.String())
	}
	resp, err := http.Get(url + "?service=" + registry.ServiceApp)
	if err != nil {
		t.Fatal(err)
	}
	var groups []struct {
		Targets []string
		Labels  map[string]string
	}
	err = json.NewDecoder(resp.Body).Decode(&groups)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 || len(groups[0].Targets) != 1 || groups[0].Targets[0] != "127.0.0.1:1" {
		t.Fatalf("groups = %+v, want one target 127.0.0.1:1", groups)
	}
	if got, want := groups[0].Labels["__meta_consul_service_metadata_tenant"], "goteborg"; got != want {
		t.Errorf("tenant meta label = %q, want %q", got, want)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d after cancel, want 0: %s", code, errb.String())
	}
}
