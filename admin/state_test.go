package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stagesub.dev/admin"
	"stagesub.dev/internal/needbin"
	"stagesub.dev/internal/syncbuf"
	"stagesub.dev/registry"
)

// stateFleet is a fleet of three tenants with data and counters, and a
// cache factory over it: each cache is one admin "process".
type stateFleet struct {
	src  *Source
	act  *Activity
	snap *registry.Snapshot
	path string
}

func newStateFleet(t *testing.T) *stateFleet {
	f := &stateFleet{src: NewSource(), act: NewActivity(), snap: snapshot("aa", "bb", "cc"),
		path: filepath.Join(t.TempDir(), "stats.json")}
	for i, slug := range []string{"aa", "bb", "cc"} {
		db := f.snap.Tenants[slug].Database
		f.src.Set(db.Name, admin.DBStats{Musicians: int64(10 * (i + 1))}, nil, false)
		f.act.Set(f.act.ServerKey(db), db.Name, admin.DBActivity{OID: uint32(100 + i), TupInserted: 5, Connectable: true})
	}
	return f
}

func (f *stateFleet) cache(log *syncbuf.Buffer, onSave func(error)) *admin.Cache {
	var h slog.Handler = slog.DiscardHandler
	if log != nil {
		h = slog.NewTextHandler(log, nil)
	}
	return admin.NewCache(admin.CacheOptions{
		Collector: &admin.Collector{Source: f.src, Activity: f.act, Logger: quiet},
		Snapshot:  func() *registry.Snapshot { return f.snap },
		StateFile: f.path, OnStateSave: onSave, Logger: slog.New(h),
	})
}

// TestCacheStateRestart: a new cache over the saved file answers with the
// saved report at once and its first refresh queries nothing that did not
// change; generations continue.
func TestCacheStateRestart(t *testing.T) {
	f := newStateFleet(t)
	ctx := context.Background()
	var saves []error
	first := f.cache(nil, func(err error) { saves = append(saves, err) })
	if !first.Report().Empty() {
		t.Fatal("first cache starts with a report although there is no state file")
	}
	for range 2 {
		if _, err := first.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := len(saves), 2; got != want || saves[0] != nil || saves[1] != nil {
		t.Fatalf("saves = %v, want 2 successes", saves)
	}
	calls := f.src.calls.Load()

	second := f.cache(nil, nil)
	at := second.Report()
	if !at.Restored || at.Generation != 2 || at.Totals.Musicians != 60 || len(at.Tenants) != 3 {
		t.Fatalf("report at start: restored %v, generation %d, musicians %d, tenants %d; want true, 2, 60, 3",
			at.Restored, at.Generation, at.Totals.Musicians, len(at.Tenants))
	}
	rep, err := second.Refresh(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.src.calls.Load() - calls; got != 0 {
		t.Errorf("first refresh after the restart queried %d tenants, want 0", got)
	}
	if rep.Generation != 3 || rep.Queried != 0 || rep.Unchanged != 3 || rep.Totals.Musicians != 60 || rep.Restored {
		t.Errorf("first refresh after the restart: generation %d, queried %d, unchanged %d, musicians %d, restored %v; want 3, 0, 3, 60, false",
			rep.Generation, rep.Queried, rep.Unchanged, rep.Totals.Musicians, rep.Restored)
	}
}

// TestCacheStateRefused: a state file that is not exactly right is ignored
// as a whole, with a warning: the cache starts empty and refreshes cold.
func TestCacheStateRefused(t *testing.T) {
	edit := func(fn func(m map[string]any)) func([]byte) []byte {
		return func(b []byte) []byte {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				panic(err)
			}
			fn(m)
			out, err := json.Marshal(m)
			if err != nil {
				panic(err)
			}
			return out
		}
	}
	report := func(m map[string]any) map[string]any { return m["report"].(map[string]any) }
	tenants := func(m map[string]any) []any { return report(m)["tenants"].([]any) }
	tests := []struct {
		name   string
		mangle func([]byte) []byte
		warn   string
	}{
		{"Empty", func([]byte) []byte { return nil }, "corrupt"},
		{"Garbage", func([]byte) []byte { return []byte("\x00\x01not json") }, "corrupt"},
		{"Truncated", func(b []byte) []byte { return b[:len(b)/2] }, "corrupt"},
		{"TrailingData", func(b []byte) []byte { return append(b, []byte(`{"more":1}`)...) }, "corrupt"},
		{"NewerVersion", edit(func(m map[string]any) { m["version"] = 2 }), "version 2"},
		{"OlderVersion", edit(func(m map[string]any) { m["version"] = 0 }), "version 0"},
		{"OtherFormat", edit(func(m map[string]any) { m["format"] = "something-else" }), "something-else"},
		{"UnknownField", edit(func(m map[string]any) { report(m)["surprise"] = true }), "unknown field"},
		{"GenerationZero", edit(func(m map[string]any) { report(m)["generation"] = 0 }), "generation 0"},
		{"TotalsOff", edit(func(m map[string]any) { report(m)["totals"].(map[string]any)["musicians"] = 61 }), "totals"},
		{"RowsOutOfOrder", edit(func(m map[string]any) {
			ts := tenants(m)
			ts[0], ts[1] = ts[1], ts[0]
		}), "out of order"},
		{"DuplicateRow", edit(func(m map[string]any) {
			ts := tenants(m)
			ts[1] = ts[0]
		}), "out of order"},
		{"RowMissing", edit(func(m map[string]any) { report(m)["tenants"] = tenants(m)[:2] }), "queried"},
		{"ReachableWithoutTime", edit(func(m map[string]any) { tenants(m)[0].(map[string]any)["stats_at"] = nil }), "reachable without"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newStateFleet(t)
			ctx := context.Background()
			if _, err := f.cache(nil, nil).Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.path, tt.mangle(b), 0o600); err != nil {
				t.Fatal(err)
			}
			if rep, err := admin.LoadState(f.path); err == nil || rep != nil || !strings.Contains(err.Error(), tt.warn) {
				t.Errorf("LoadState = %v, %v; want nil and an error containing %q", rep, err, tt.warn)
			}
			var log syncbuf.Buffer
			c := f.cache(&log, nil)
			if !c.Report().Empty() {
				t.Errorf("report at start = generation %d, want empty", c.Report().Generation)
			}
			if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), tt.warn) {
				t.Errorf("log lacks a warning with %q:\n%s", tt.warn, log.String())
			}
			calls := f.src.calls.Load()
			rep, err := c.Refresh(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.src.calls.Load() - calls; got != 3 || rep.Queried != 3 || rep.Generation != 1 || rep.Totals.Musicians != 60 {
				t.Errorf("first refresh: %d reads, queried %d, generation %d, musicians %d; want a cold refresh: 3, 3, 1, 60",
					got, rep.Queried, rep.Generation, rep.Totals.Musicians)
			}
			// And the file is good again.
			if rep, err := admin.LoadState(f.path); err != nil || rep.Generation != 1 {
				t.Errorf("state after the refresh: %v, %v", rep, err)
			}
		})
	}
}

// TestCacheStateSaveFails: a failed save is logged and reported to
// OnStateSave; the refresh is published all the same.
func TestCacheStateSaveFails(t *testing.T) {
	f := newStateFleet(t)
	f.path = filepath.Join(t.TempDir(), "missing-dir", "stats.json")
	var log syncbuf.Buffer
	var saves []error
	c := f.cache(&log, func(err error) { saves = append(saves, err) })
	rep, err := c.Refresh(context.Background())
	if err != nil {
		t.Fatalf("refresh failed with the save: %v", err)
	}
	if rep.Generation != 1 || c.Report() != rep || rep.Totals.Musicians != 60 {
		t.Errorf("report not published: generation %d, musicians %d", rep.Generation, rep.Totals.Musicians)
	}
	if len(saves) != 1 || !errors.Is(saves[0], fs.ErrNotExist) {
		t.Errorf("OnStateSave got %v, want one not-exist error", saves)
	}
	if !strings.Contains(log.String(), "saving the stats report failed") {
		t.Errorf("log lacks the failure:\n%s", log.String())
	}
}

// readOnly makes dir refuse new files, also for root (chattr +i), and undoes
// it at cleanup. A missing chattr fails in CI (needbin); the test is skipped
// only when the filesystem refuses the immutable flag.
func readOnly(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
		return
	}
	chattr := needbin.Path(t, "chattr", "apt-get install e2fsprogs")
	if out, err := exec.Command(chattr, "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("root, and this filesystem refuses chattr +i (%v: %s): cannot make a read-only directory", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(chattr, "-i", dir).Run() })
}

// TestSaveStateAtomic: the file is replaced whole or not at all, and no
// temporary file stays behind either way.
func TestSaveStateAtomic(t *testing.T) {
	rows := []admin.TenantStats{{Slug: "aa", Musicians: 3}}
	rep := func(gen uint64) *admin.Report {
		return &admin.Report{Generation: gen, FinishedAt: time.Now(), Tenants: rows, Totals: admin.Sum(rows), Queried: 1}
	}
	list := func(t *testing.T, dir string) string {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, ",")
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir, path string) // after the first, good save
		wantErr bool
		wantGen uint64 // generation in the file afterwards (0: path is no file)
		wantDir string
	}{
		{"Replaces", nil, false, 2, "stats.json"},
		{"ReadOnlyDir", func(t *testing.T, dir, _ string) { readOnly(t, dir) }, true, 1, "stats.json"},
		{"TargetIsDirectory", func(t *testing.T, _, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(path, "keep"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, true, 0, "stats.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "stats.json")
			if err := admin.SaveState(path, rep(1)); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("state file: %v, %v; want mode 0600", fi, err)
			}
			before, _ := os.ReadFile(path)
			if tt.setup != nil {
				tt.setup(t, dir, path)
			}
			err := admin.SaveState(path, rep(2))
			if (err != nil) != tt.wantErr {
				t.Errorf("SaveState error = %v, want error %v", err, tt.wantErr)
			}
			if got := list(t, dir); got != tt.wantDir {
				t.Errorf("directory = %s, want %s (no temporary files)", got, tt.wantDir)
			}
			if tt.wantGen == 0 {
				return
			}
			got, err := admin.LoadState(path)
			if err != nil || got.Generation != tt.wantGen {
				t.Fatalf("LoadState = %v, %v; want generation %d", got, err, tt.wantGen)
			}
			if after, _ := os.ReadFile(path); tt.wantErr && !bytes.Equal(after, before) {
				t.Error("the old file changed although the save failed")
			}
		})
	}
	if err := admin.SaveState(filepath.Join(t.TempDir(), "x.json"), &admin.Report{}); err == nil {
		t.Error("saving an empty report succeeded")
	}
}
