package ctl_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/jackc/pgx/v5"

	"stagesub.dev/deploy/doctor"
	"stagesub.dev/registry"
)

func TestDoctorCLI(t *testing.T) {
	f := newFixture(t)
	f.drop(t, "sick")
	f.mustRun(t, "tenant", "create", "sick", "--name", "Sick SO")

	code, out, _ := f.run(t, "doctor", "sick")
	if code != 1 {
		t.Errorf("doctor without instance: exit %d, want 1\n%s", code, out)
	}
	contains(t, "doctor", out, "sick (sick.stagesub.test)", "✓ record", "✓ database", "✗ instances", "→ start it", "– router")

	code, out, _ = f.run(t, "doctor", "nosuch")
	if code != 1 {
		t.Errorf("doctor of unknown tenant: exit %d, want 1", code)
	}
	contains(t, "doctor nosuch", out, "✗ record", "no tenant record", "tenant create nosuch")

	// A record that does not decode is checked too, under --all.
	if _, err := f.consul.Client(t).KV().Put(&api.KVPair{Key: registry.Key("broken"), Value: []byte("{not json")}, nil); err != nil {
		t.Fatal(err)
	}
	_, out, _ = f.run(t, "doctor", "--all", "--json")
	var reps []doctor.Report
	if err := json.Unmarshal([]byte(out), &reps); err != nil {
		t.Fatalf("doctor --all --json: %v\n%s", err, out)
	}
	failed := map[string]string{}
	for _, r := range reps {
		failed[r.Slug] = strings.Join(r.Failed(), ",")
	}
	if want := map[string]string{"sick": "instances", "broken": "record,database,instances"}; !reflect.DeepEqual(failed, want) {
		t.Errorf("doctor --all failures = %v, want %v", failed, want)
	}
	if got := reps[0].Get(doctor.CheckRecord).Detail; reps[0].Slug == "broken" && !strings.Contains(got, "invalid") {
		t.Errorf("broken record detail = %q", got)
	}
	if code, _, _ := f.run(t, "doctor"); code != 2 {
		t.Errorf("doctor without args: exit %d, want 2", code)
	}
}

func TestImportSharedCLI(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.drop(t, "north", "south")
	_, legacy := f.c.CreateDB(t, "")
	conn, err := pgx.Connect(ctx, legacy)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `
		CREATE TABLE musicians (id bigint PRIMARY KEY, org int NOT NULL, name text NOT NULL, instrument text NOT NULL);
		CREATE TABLE projects (id bigint PRIMARY KEY, org int NOT NULL, name text NOT NULL, starts_on date NOT NULL, ends_on date NOT NULL);
		CREATE TABLE requests (id bigint PRIMARY KEY, org int NOT NULL, project_id bigint REFERENCES projects, musician_id bigint REFERENCES musicians,
			position text NOT NULL, answer_token text NOT NULL);
		INSERT INTO musicians SELECT i, 1 + i % 2, 'M' || i, 'cello' FROM generate_series(1, 10) i;
		INSERT INTO projects SELECT i, 1 + i % 2, 'P' || i, '2027-01-01', '2027-01-02' FROM generate_series(1, 4) i;
		INSERT INTO requests SELECT i, 1 + i % 2, i, i, 'cello', md5(i::text) FROM generate_series(1, 4) i;`)
	if err != nil {
		t.Fatal(err)
	}
	out := f.mustRun(t, "import-shared", "--from", legacy, "--tenant-column", "org", "--map", "1=north,2=south", "--dry-run")
	contains(t, "dry run", out, "musicians → projects → requests", "north", "planned", "0 failed")
	if ts, _, _ := f.store.FindTenants(ctx); len(ts) != 0 {
		t.Errorf("dry run created tenants")
	}
	out = f.mustRun(t, "import-shared", "--from", legacy, "--tenant-column", "org", "--map", "1=north", "--map", "2=south")
	contains(t, "import", out, "north", "south", "imported", "5 ✓", "2 ✓", "0 failed")
	out = f.mustRun(t, "import-shared", "--from", legacy, "--tenant-column", "org", "--map", "1=north,2=south")
	contains(t, "re-run", out, "already imported")
	if code, _, _ := f.run(t, "import-shared", "--from", legacy, "--map", "1=north"); code != 2 {
		t.Errorf("no --tenant-column: exit %d, want 2", code)
	}
}
