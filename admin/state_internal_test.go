package admin

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"stagesub.dev/registry"
)

// TestStateRoundTrip: everything a refresh needs from its previous report,
// the unexported baselines included, survives SaveState and LoadState.
func TestStateRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 26, 20, 0, 0, 123456789, time.UTC)
	verified := at.Add(30 * time.Second)
	last := at.Add(-time.Hour)
	db := registry.Database{Server: "pg2", Host: "10.0.0.7", Port: 5433, Name: "orchestra_aa"}
	rows := []TenantStats{
		{Slug: "aa", Name: "A", Status: registry.StatusActive, PanelURL: "https://aa.example/", Musicians: 10, Projects: 2,
			OpenRequests: 3, LastActivity: &last, SchemaVersion: 7, DatabaseBytes: 8 << 20, InstancesPassing: 1, InstancesTotal: 2,
			Reachable: true, StatsAt: &at, VerifiedAt: &verified, Unchanged: true, Failures: 2,
			baseline: &baseline{db: db, activity: DBActivity{OID: 16384, TupInserted: 100, TupUpdated: 5, TupDeleted: 1,
				StatsReset: 1700000000000001, StatsEpoch: 1700000000000002, Connectable: true}}},
		{Slug: "bb", Name: "B", Status: registry.StatusSuspended, Reachable: false, TimedOut: true, Error: "timed out after 2s",
			Musicians: 4, StatsAt: &at, VerifiedAt: &at, Failures: 9}, // failed: last good numbers, no baseline
		{Slug: "cc", Name: "C", Status: registry.StatusProvisioning, Error: "connection refused", Failures: 1}, // never read
	}
	want := &Report{Generation: 42, StartedAt: at, FinishedAt: verified, Duration: 27 * time.Millisecond, Totals: Sum(rows),
		Queried: 2, Unchanged: 1, ActivityFailures: 1, Tenants: rows}
	path := filepath.Join(t.TempDir(), "stats.json")
	if err := SaveState(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Restored {
		t.Error("loaded report is not marked restored")
	}
	got.Restored = false
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got, want)
	}
	for i := range want.Tenants {
		if g, w := got.Tenants[i].baseline, want.Tenants[i].baseline; !reflect.DeepEqual(g, w) {
			t.Errorf("%s: baseline = %+v, want %+v", want.Tenants[i].Slug, g, w)
		}
	}
}
