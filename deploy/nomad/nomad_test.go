package nomad_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"

	"stagesub.dev/deploy/nomad"
)

var update = flag.Bool("update", false, "rewrite the checked-in *.nomad.json files")

var common = nomad.Common{BaseDomain: "stagesub.com"}

// golden renders the checked-in example jobs.
func golden(t *testing.T) map[string]*api.Job {
	t.Helper()
	router, err := nomad.RouterJob(nomad.RouterOptions{Common: common, ExtraEnv: map[string]string{"STAGESUB_ACME_EMAIL": "ops@stagesub.com", "STAGESUB_ACME_AGREE": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := nomad.AdminJob(nomad.AdminOptions{Common: common})
	if err != nil {
		t.Fatal(err)
	}
	app, err := nomad.AppJob("goteborg", nomad.AppOptions{Common: common, Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*api.Job{
		"stagesub-router.nomad.json":       router,
		"stagesub-admin.nomad.json":        admin,
		"stagesub-app-goteborg.nomad.json": app,
	}
}

func TestCheckedInJobsUpToDate(t *testing.T) {
	for name, j := range golden(t) {
		want, err := nomad.JobJSON(j)
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
			t.Errorf("%s is stale; run `go test ./nomad -update` in deploy/", name)
		}
		// The file decodes back into the api structs and canonicalizes.
		var req api.JobRegisterRequest
		if err := json.Unmarshal(got, &req); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		req.Job.Canonicalize()
		if req.Job.ID == nil || *req.Job.ID+".nomad.json" != name {
			t.Errorf("%s: job ID %v", name, req.Job.ID)
		}
	}
}

func TestRouterIsSystemJob(t *testing.T) {
	j := golden(t)["stagesub-router.nomad.json"]
	if got, want := *j.Type, api.JobTypeSystem; got != want {
		t.Errorf("type = %s, want %s", got, want)
	}
	ports := map[string]int{}
	for _, p := range j.TaskGroups[0].Networks[0].ReservedPorts {
		ports[p.Label] = p.Value
	}
	if ports["http"] != 80 || ports["https"] != 443 {
		t.Errorf("reserved ports = %v, want http 80 and https 443", ports)
	}
	env := j.TaskGroups[0].Tasks[0].Env
	if got := env["STAGESUB_ACME_EMAIL"]; got != "ops@stagesub.com" {
		t.Errorf("extra env not applied: STAGESUB_ACME_EMAIL = %q", got)
	}
	if env["STAGESUB_TLS_MODE"] != "acme" || env["STAGESUB_ACME_STORAGE"] != "consul" {
		t.Errorf("router TLS: mode %q storage %q, want acme with certificates shared in Consul", env["STAGESUB_TLS_MODE"], env["STAGESUB_ACME_STORAGE"])
	}
}

func TestAppJob(t *testing.T) {
	j, err := nomad.AppJob("new-york", nomad.AppOptions{Common: common})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *j.ID, "stagesub-app-new-york"; got != want {
		t.Errorf("ID = %s, want %s", got, want)
	}
	if got, want := *j.Type, api.JobTypeService; got != want {
		t.Errorf("type = %s, want %s", got, want)
	}
	task := j.TaskGroups[0].Tasks[0]
	if got, want := task.Env["STAGESUB_TENANT"], "new-york"; got != want {
		t.Errorf("STAGESUB_TENANT = %q, want %q", got, want)
	}
	b, _ := json.Marshal(j)
	if strings.Contains(string(b), "postgres://") {
		t.Error("the job contains a database URL; it must come from the Nomad Variable")
	}
	if len(task.Templates) != 1 {
		t.Fatalf("templates = %d, want 1", len(task.Templates))
	}
	tmpl := task.Templates[0]
	if !*tmpl.Envvars {
		t.Error("template does not render into the environment")
	}
	if want := `nomadVar "nomad/jobs/stagesub-app-new-york"`; !strings.Contains(*tmpl.EmbeddedTmpl, want) {
		t.Errorf("template %q does not read %s", *tmpl.EmbeddedTmpl, want)
	}
	if !strings.Contains(*tmpl.EmbeddedTmpl, "DATABASE_URL={{ .DATABASE_URL }}") {
		t.Errorf("template %q does not set DATABASE_URL", *tmpl.EmbeddedTmpl)
	}
	if got, want := nomad.AppVariablePath("new-york"), "nomad/jobs/"+*j.ID; got != want {
		t.Errorf("variable path %s is not the job's own %s", got, want)
	}
}

func TestAppVariable(t *testing.T) {
	v, err := nomad.AppVariable("goteborg", "postgres://orchestra_goteborg:pw@db1:5432/orchestra_goteborg", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := v.Path, "nomad/jobs/stagesub-app-goteborg"; got != want {
		t.Errorf("path = %s, want %s", got, want)
	}
	if _, ok := v.Items["CONSUL_HTTP_TOKEN"]; ok {
		t.Error("empty token stored")
	}
	t.Run("ErrEmptyURL", func(t *testing.T) {
		if _, err := nomad.AppVariable("goteborg", "", ""); err == nil {
			t.Error("no error")
		}
	})
}

func TestErrors(t *testing.T) {
	if _, err := nomad.AppJob("Bad_Slug", nomad.AppOptions{Common: common}); err == nil {
		t.Error("AppJob(Bad_Slug): no error")
	}
	if _, err := nomad.AppJob("admin", nomad.AppOptions{Common: common}); err == nil {
		t.Error("AppJob(admin): reserved slug accepted")
	}
	if _, err := nomad.RouterJob(nomad.RouterOptions{}); err == nil {
		t.Error("RouterJob without base domain: no error")
	}
}
