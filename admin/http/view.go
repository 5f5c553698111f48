package http

import (
	"cmp"
	"net/url"
	"slices"
	"strings"

	"stagesub.dev/admin"
)

// view is the sort order and filter of the tenant rows, taken from the
// query string: q (substring of slug or name, case-insensitive), status,
// problems=1 (unreachable, timed out or not every instance passing),
// sort=<column key> and order=desc.
type view struct {
	Q        string
	Status   string
	Problems bool
	Sort     string
	Desc     bool
}

var columns = []struct {
	key, label string
	cmp        func(a, b *admin.TenantStats) int
}{
	{"name", "Customer", func(a, b *admin.TenantStats) int {
		return cmp.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
	}},
	{"slug", "Slug", func(a, b *admin.TenantStats) int { return cmp.Compare(a.Slug, b.Slug) }},
	{"status", "Status", func(a, b *admin.TenantStats) int { return cmp.Compare(a.Status, b.Status) }},
	{"musicians", "Musicians", func(a, b *admin.TenantStats) int { return cmp.Compare(a.Musicians, b.Musicians) }},
	{"projects", "Projects", func(a, b *admin.TenantStats) int { return cmp.Compare(a.Projects, b.Projects) }},
	{"open_requests", "Open requests", func(a, b *admin.TenantStats) int { return cmp.Compare(a.OpenRequests, b.OpenRequests) }},
	{"last_activity", "Last activity", func(a, b *admin.TenantStats) int {
		switch {
		case a.LastActivity == nil && b.LastActivity == nil:
			return 0
		case a.LastActivity == nil:
			return -1
		case b.LastActivity == nil:
			return 1
		}
		return a.LastActivity.Compare(*b.LastActivity)
	}},
	{"schema_version", "Schema", func(a, b *admin.TenantStats) int { return cmp.Compare(a.SchemaVersion, b.SchemaVersion) }},
	{"database_bytes", "DB size", func(a, b *admin.TenantStats) int { return cmp.Compare(a.DatabaseBytes, b.DatabaseBytes) }},
	{"instances", "Instances", func(a, b *admin.TenantStats) int {
		return cmp.Or(cmp.Compare(a.InstancesPassing, b.InstancesPassing), cmp.Compare(a.InstancesTotal, b.InstancesTotal))
	}},
	{"reachable", "Database", func(a, b *admin.TenantStats) int {
		return cmp.Compare(b2i(a.Reachable), b2i(b.Reachable))
	}},
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func parseView(q url.Values) view {
	v := view{
		Q:        strings.TrimSpace(q.Get("q")),
		Status:   q.Get("status"),
		Problems: q.Get("problems") == "1",
		Sort:     q.Get("sort"),
		Desc:     q.Get("order") == "desc",
	}
	known := false
	for _, c := range columns {
		known = known || c.key == v.Sort
	}
	if !known {
		v.Sort = "slug"
	}
	return v
}

func (v view) query() url.Values {
	q := url.Values{}
	if v.Q != "" {
		q.Set("q", v.Q)
	}
	if v.Status != "" {
		q.Set("status", v.Status)
	}
	if v.Problems {
		q.Set("problems", "1")
	}
	q.Set("sort", v.Sort)
	if v.Desc {
		q.Set("order", "desc")
	}
	return q
}

// problem reports whether a row needs attention.
func problem(t *admin.TenantStats) bool {
	return !t.Reachable || t.TimedOut || t.InstancesPassing < t.InstancesTotal ||
		(t.Status == "active" && t.InstancesPassing == 0)
}

// apply returns the indexes of the rows v selects, in v's order (ties by
// slug). rows is not modified.
func (v view) apply(rows []admin.TenantStats) []int {
	q := strings.ToLower(v.Q)
	out := make([]int, 0, len(rows))
	for i := range rows {
		t := &rows[i]
		if q != "" && !strings.Contains(t.Slug, q) && !strings.Contains(strings.ToLower(t.Name), q) {
			continue
		}
		if v.Status != "" && string(t.Status) != v.Status {
			continue
		}
		if v.Problems && !problem(t) {
			continue
		}
		out = append(out, i)
	}
	var by func(a, b *admin.TenantStats) int
	for _, c := range columns {
		if c.key == v.Sort {
			by = c.cmp
		}
	}
	slices.SortStableFunc(out, func(i, j int) int {
		a, b := &rows[i], &rows[j]
		c := by(a, b)
		if v.Desc {
			c = -c
		}
		return cmp.Or(c, cmp.Compare(a.Slug, b.Slug))
	})
	return out
}
