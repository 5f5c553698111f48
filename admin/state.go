package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	"stagesub.dev/registry"
)

// The state file keeps the last published Report across restarts of the
// admin, so that a restart is not a cold refresh: the rows keep their
// baselines (the write counters read before their query) and StatsAt, and
// the first refresh after the restart compares against them like any other.
//
// Format: one JSON object {"format": StateFormat, "version": StateVersion,
// "saved_at", "report"}. The rows use TenantStats' JSON encoding (the one the
// API serves) plus a "baseline" object; a change to either that an older
// reader would misread needs a new StateVersion. A reader accepts exactly its
// own version: anything else (older, newer, corrupt, truncated, totals that
// do not add up) is refused as a whole, never loaded in part.
const (
	StateFormat  = "stagesub-admin-stats"
	StateVersion = 1
)

type stateFile struct {
	Format  string      `json:"format"`
	Version int         `json:"version"`
	SavedAt time.Time   `json:"saved_at"`
	Report  stateReport `json:"report"`
}

type stateReport struct {
	Generation       uint64     `json:"generation"`
	StartedAt        time.Time  `json:"started_at"`
	FinishedAt       time.Time  `json:"finished_at"`
	DurationNS       int64      `json:"duration_ns"`
	Totals           Totals     `json:"totals"`
	Queried          int        `json:"queried"`
	Unchanged        int        `json:"unchanged"`
	ActivityFailures int        `json:"activity_failures"`
	Tenants          []stateRow `json:"tenants"`
}

type stateRow struct {
	TenantStats
	Baseline *stateBaseline `json:"baseline,omitempty"`
}

// stateBaseline is a baseline with stable JSON names (DBActivity's tags,
// flattened beside the database location).
type stateBaseline struct {
	Database registry.Database `json:"database"`
	DBActivity
}

// SaveState writes rep, baselines included, to path atomically: it writes
// a temporary file in path's directory, syncs it, renames it over path and
// syncs the directory. A reader sees the old file or the new one, never a
// mix; on any error the old file is left as it was and no temporary file
// stays behind. The file is created with mode 0600.
func SaveState(path string, rep *Report) error {
	if rep == nil || rep.Empty() {
		return errors.New("admin: save state: no report to save")
	}
	sf := stateFile{Format: StateFormat, Version: StateVersion, SavedAt: time.Now().UTC(), Report: stateReport{
		Generation: rep.Generation, StartedAt: rep.StartedAt, FinishedAt: rep.FinishedAt,
		DurationNS: int64(rep.Duration), Totals: rep.Totals, Queried: rep.Queried, Unchanged: rep.Unchanged,
		ActivityFailures: rep.ActivityFailures, Tenants: make([]stateRow, len(rep.Tenants)),
	}}
	for i, t := range rep.Tenants {
		row := stateRow{TenantStats: t}
		row.TenantStats.baseline = nil
		if b := t.baseline; b != nil {
			row.Baseline = &stateBaseline{Database: b.db, DBActivity: b.activity}
		}
		sf.Report.Tenants[i] = row
	}
	data, err := json.Marshal(sf)
	if err != nil {
		return fmt.Errorf("admin: save state: encode: %w", err)
	}
	return writeAtomic(path, data)
}

// writeAtomic replaces path with data: temporary file, fsync, rename, fsync
// of the directory.
func writeAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("admin: save state: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close() // a second Close only fails
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("admin: save state: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("admin: save state: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("admin: save state: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("admin: save state: %w", err)
	}
	// The new file is in place; syncing the directory makes the rename
	// durable. A failure here is reported, but the file stays.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("admin: save state: sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("admin: save state: sync directory %s: %w", dir, err)
	}
	return nil
}

// LoadState reads a report saved by SaveState, with Restored set. A missing
// file is an error satisfying errors.Is(err, fs.ErrNotExist). A file of
// another format or version, or one that does not decode or whose contents
// are inconsistent, is an error too: nothing of it is returned.
func LoadState(path string) (*Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("admin: load state: %w", err)
	}
	// The whole file must be one JSON value (Unmarshal refuses trailing
	// data) of this format and version before its contents are decoded.
	var head struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("admin: load state %s: corrupt: %w", path, err)
	}
	if head.Format != StateFormat || head.Version != StateVersion {
		return nil, fmt.Errorf("admin: load state %s: format %q version %d, want %q version %d",
			path, head.Format, head.Version, StateFormat, StateVersion)
	}
	var sf stateFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sf); err != nil {
		return nil, fmt.Errorf("admin: load state %s: corrupt: %w", path, err)
	}
	rep, err := sf.Report.report()
	if err != nil {
		return nil, fmt.Errorf("admin: load state %s: %w", path, err)
	}
	return rep, nil
}

// report checks r and converts it.
func (r *stateReport) report() (*Report, error) {
	if r.Generation == 0 {
		return nil, errors.New("inconsistent: generation 0")
	}
	if r.Queried < 0 || r.Unchanged < 0 || r.Queried+r.Unchanged != len(r.Tenants) {
		return nil, fmt.Errorf("inconsistent: %d queried + %d unchanged != %d tenants", r.Queried, r.Unchanged, len(r.Tenants))
	}
	rows := make([]TenantStats, len(r.Tenants))
	for i, sr := range r.Tenants {
		t := sr.TenantStats
		if t.Slug == "" || (i > 0 && t.Slug <= rows[i-1].Slug) {
			return nil, fmt.Errorf("inconsistent: tenant %d (%q) missing or out of order", i, t.Slug)
		}
		if t.Reachable && (t.StatsAt == nil || t.VerifiedAt == nil) {
			return nil, fmt.Errorf("inconsistent: tenant %q reachable without stats_at/verified_at", t.Slug)
		}
		if b := sr.Baseline; b != nil {
			t.baseline = &baseline{db: b.Database, activity: b.DBActivity}
		}
		rows[i] = t
	}
	sum := Sum(rows)
	if !totalsEqual(sum, r.Totals) {
		return nil, fmt.Errorf("inconsistent: totals %+v do not match the rows (%+v)", r.Totals, sum)
	}
	return &Report{Generation: r.Generation, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
		Duration: time.Duration(r.DurationNS), Totals: sum, Queried: r.Queried, Unchanged: r.Unchanged,
		ActivityFailures: r.ActivityFailures, Tenants: rows, Restored: true}, nil
}

func totalsEqual(a, b Totals) bool {
	return a.Customers == b.Customers && maps.Equal(a.CustomersByStatus, b.CustomersByStatus) &&
		a.Musicians == b.Musicians && a.Projects == b.Projects && a.OpenRequests == b.OpenRequests &&
		a.DatabaseBytes == b.DatabaseBytes && a.Reachable == b.Reachable && a.Unreachable == b.Unreachable
}
