package http_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"stagesub.dev/app"
)

type musicianList struct {
	Items  []app.Musician `json:"items"`
	Total  int            `json:"total"`
	Limit  int            `json:"limit"`
	Offset int            `json:"offset"`
	Next   string         `json:"next"`
}

func TestAPIAuth(t *testing.T) {
	e := MustEnv(t)
	viewer := e.MustUser(app.RoleViewer, "viewer@example.org")
	tests := []struct {
		name, token, method, path string
		body                      any
		want                      int
	}{
		{"ErrNoToken", "", "GET", "/api/v1/musicians", nil, http.StatusUnauthorized},
		{"ErrBadToken", "sst_" + app.NewToken(), "GET", "/api/v1/musicians", nil, http.StatusUnauthorized},
		{"ErrMalformedToken", "nonsense", "GET", "/api/v1/musicians", nil, http.StatusUnauthorized},
		{"ViewerReads", e.MustToken(viewer), "GET", "/api/v1/musicians", nil, http.StatusOK},
		{"ErrViewerWrites", e.MustToken(viewer), "POST", "/api/v1/musicians", map[string]string{"name": "A", "instrument": "b"}, http.StatusForbidden},
		{"AdminWrites", e.MustToken(e.Admin), "POST", "/api/v1/musicians", map[string]string{"name": "A", "instrument": "b"}, http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ae apiError
			r := e.API(tt.token).Call(tt.method, tt.path, tt.body, nil)
			if got := r.Status; got != tt.want {
				t.Fatalf("status = %d, want %d: %s", got, tt.want, r.Body)
			}
			if tt.want == http.StatusUnauthorized {
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q", r.Header.Get("WWW-Authenticate"))
				}
				e.API(tt.token).Call(tt.method, tt.path, tt.body, &ae)
				if ae.Error.Code != app.EUNAUTHORIZED {
					t.Errorf("error code = %q, want %q", ae.Error.Code, app.EUNAUTHORIZED)
				}
			}
		})
	}
}

func TestAPIMusicians(t *testing.T) {
	e := MustEnv(t)
	api := e.API(e.MustToken(e.Admin))
	ctx := e.AdminCtx()
	for i := 0; i < 120; i++ {
		if _, err := e.DB.CreateMusician(ctx, app.MusicianInput{Name: fmt.Sprintf("Musician %03d", i), Instrument: []string{"violin", "cello", "flute"}[i%3]}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("Pagination", func(t *testing.T) {
		var seen []string
		path := "/api/v1/musicians?limit=50"
		for pages := 0; path != ""; pages++ {
			if pages > 5 {
				t.Fatal("too many pages")
			}
			var l musicianList
			if r := api.Call("GET", path, nil, &l); r.Status != http.StatusOK {
				t.Fatalf("GET %s: %d", path, r.Status)
			}
			if l.Total != 120 || l.Limit != 50 {
				t.Errorf("total %d limit %d, want 120 50", l.Total, l.Limit)
			}
			for _, m := range l.Items {
				seen = append(seen, m.Name)
			}
			path = l.Next
		}
		if got, want := len(seen), 120; got != want {
			t.Fatalf("items over all pages = %d, want %d", got, want)
		}
		if seen[0] != "Musician 000" || seen[119] != "Musician 119" {
			t.Errorf("order: first %q last %q", seen[0], seen[119])
		}
	})

	t.Run("Search", func(t *testing.T) {
		var l musicianList
		api.Call("GET", "/api/v1/musicians?q=CELLO&limit=200", nil, &l)
		if got, want := l.Total, 40; got != want {
			t.Errorf("cello total = %d, want %d", got, want)
		}
		api.Call("GET", "/api/v1/musicians?offset=1000", nil, &l)
		if l.Total != 120 || len(l.Items) != 0 || l.Next != "" {
			t.Errorf("past the end: total %d items %d next %q, want 120 0 \"\"", l.Total, len(l.Items), l.Next)
		}
	})

	t.Run("ErrPageParams", func(t *testing.T) {
		var ae apiError
		r := api.Call("GET", "/api/v1/musicians?limit=0&offset=-1", nil, &ae)
		if r.Status != http.StatusUnprocessableEntity || ae.Error.Fields["limit"] == "" || ae.Error.Fields["offset"] == "" {
			t.Errorf("status %d fields %v, want 422 with limit and offset", r.Status, ae.Error.Fields)
		}
		r = api.Call("GET", "/api/v1/musicians?limit=201", nil, nil)
		if r.Status != http.StatusUnprocessableEntity {
			t.Errorf("limit=201: status %d, want 422", r.Status)
		}
	})

	var created app.Musician
	t.Run("Create", func(t *testing.T) {
		r := api.Call("POST", "/api/v1/musicians", map[string]any{"name": " Karin Holm ", "instrument": "horn", "email": "karin@example.org"}, &created)
		if r.Status != http.StatusCreated {
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
		if got, want := r.Header.Get("Location"), "/api/v1/musicians/"+itoa(created.ID); got != want {
			t.Errorf("Location = %q, want %q", got, want)
		}
		if created.Name != "Karin Holm" || !created.Active {
			t.Errorf("created = %+v", created)
		}
	})

	t.Run("ErrValidation", func(t *testing.T) {
		tests := []struct {
			name   string
			body   any
			fields []string
		}{
			{"Empty", map[string]any{}, []string{"name", "instrument"}},
			{"Lengths", map[string]any{"name": strings.Repeat("n", 201), "instrument": "x", "notes": strings.Repeat("n", 4001)}, []string{"name", "notes"}},
			{"Email", map[string]any{"name": "a", "instrument": "b", "email": "a@b"}, []string{"email"}},
			{"Type", `{"name": 5, "instrument": "b"}`, []string{"name"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var ae apiError
				r := api.Call("POST", "/api/v1/musicians", tt.body, &ae)
				if r.Status != http.StatusUnprocessableEntity {
					t.Fatalf("status %d, want 422: %s", r.Status, r.Body)
				}
				if ae.Error.Code != app.EINVALID {
					t.Errorf("code %q, want %q", ae.Error.Code, app.EINVALID)
				}
				for _, f := range tt.fields {
					if ae.Error.Fields[f] == "" {
						t.Errorf("no message for field %q in %v", f, ae.Error.Fields)
					}
				}
			})
		}
	})

	t.Run("ErrBadBody", func(t *testing.T) {
		for _, body := range []string{`{"name": "a",`, `{"name":"a","instrument":"b","bogus":1}`, `{"name":"a","instrument":"b"} {}`} {
			if r := api.Call("POST", "/api/v1/musicians", body, nil); r.Status != http.StatusUnprocessableEntity {
				t.Errorf("body %q: status %d, want 422", body, r.Status)
			}
		}
		big := `{"name":"a","instrument":"b","notes":"` + strings.Repeat("x", 300<<10) + `"}`
		if r := api.Call("POST", "/api/v1/musicians", big, nil); r.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("big body: status %d, want 413", r.Status)
		}
	})

	t.Run("UpdateDeactivate", func(t *testing.T) {
		var m app.Musician
		r := api.Call("PUT", "/api/v1/musicians/"+itoa(created.ID), map[string]any{"name": "Karin Holm", "instrument": "horn", "phone": "+46 70 111 22 33"}, &m)
		if r.Status != http.StatusOK || m.Phone != "+46 70 111 22 33" || !m.Active {
			t.Fatalf("update: %d %+v", r.Status, m)
		}
		r = api.Call("DELETE", "/api/v1/musicians/"+itoa(created.ID), nil, &m)
		if r.Status != http.StatusOK || m.Active {
			t.Fatalf("deactivate: %d %+v", r.Status, m)
		}
		var l musicianList
		api.Call("GET", "/api/v1/musicians?active=true&q=karin", nil, &l)
		if l.Total != 0 {
			t.Errorf("active musicians named karin = %d, want 0", l.Total)
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		for _, p := range []string{"/api/v1/musicians/999999", "/api/v1/musicians/x", "/api/v1/nope", "/api/v2/musicians"} {
			var ae apiError
			r := api.Call("GET", p, nil, &ae)
			if r.Status != http.StatusNotFound || ae.Error.Code != app.ENOTFOUND {
				t.Errorf("GET %s: status %d code %q, want 404 not_found", p, r.Status, ae.Error.Code)
			}
		}
		if r := api.Call("PUT", "/api/v1/musicians/999999", map[string]any{"name": "a", "instrument": "b"}, nil); r.Status != http.StatusNotFound {
			t.Errorf("PUT unknown: status %d, want 404", r.Status)
		}
	})
}

type requestJSON struct {
	ID        int64  `json:"id"`
	Status    string `json:"status"`
	AnswerURL string `json:"answer_url"`
	Position  string `json:"position"`
}

func TestAPIProjectsAndRequests(t *testing.T) {
	e := MustEnv(t)
	api := e.API(e.MustToken(e.Admin))

	var ae apiError
	r := api.Call("POST", "/api/v1/projects", map[string]any{"name": "", "starts_on": "2027-13-01", "ends_on": "", "status": "x"}, &ae)
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("invalid project: status %d", r.Status)
	}
	for _, f := range []string{"name", "starts_on", "ends_on", "status"} {
		if ae.Error.Fields[f] == "" {
			t.Errorf("no message for %q: %v", f, ae.Error.Fields)
		}
	}
	var p app.Project
	r = api.Call("POST", "/api/v1/projects", map[string]any{"name": "Sibelius", "starts_on": "2027-09-01", "ends_on": "2027-09-02"}, &p)
	if r.Status != http.StatusCreated || p.Status != app.ProjectPlanned || p.StartsOn.String() != "2027-09-01" {
		t.Fatalf("create project: %d %+v", r.Status, p)
	}
	if !strings.Contains(r.Body, `"starts_on":"2027-09-01"`) {
		t.Errorf("dates not encoded as YYYY-MM-DD: %s", r.Body)
	}
	r = api.Call("PUT", "/api/v1/projects/"+itoa(p.ID), map[string]any{"name": "Sibelius 5", "starts_on": "2027-09-01", "ends_on": "2027-09-03", "status": "confirmed"}, &p)
	if r.Status != http.StatusOK || p.Name != "Sibelius 5" || p.Status != "confirmed" {
		t.Fatalf("update project: %d %+v", r.Status, p)
	}
	var m app.Musician
	api.Call("POST", "/api/v1/musicians", map[string]any{"name": "Olof Ek", "instrument": "viola"}, &m)

	var rq requestJSON
	r = api.Call("POST", "/api/v1/requests", map[string]any{"project_id": p.ID, "musician_id": m.ID, "position": "viola 3"}, &rq)
	if r.Status != http.StatusCreated || rq.Status != app.RequestPending {
		t.Fatalf("create request: %d %s", r.Status, r.Body)
	}
	token := rq.AnswerURL[strings.LastIndex(rq.AnswerURL, "/r/")+3:]
	if len(token) != 43 || strings.Contains(r.Body, `"AnswerToken"`) {
		t.Errorf("answer token %q: want 43 base64url characters (256 bits), exposed only in answer_url", token)
	}
	if r := api.Call("POST", "/api/v1/requests", map[string]any{"project_id": p.ID, "musician_id": m.ID, "position": "viola 3"}, nil); r.Status != http.StatusConflict {
		t.Errorf("duplicate request: status %d, want 409", r.Status)
	}
	if r := api.Call("POST", "/api/v1/requests", map[string]any{"project_id": 999999, "musician_id": m.ID, "position": "x"}, nil); r.Status != http.StatusNotFound {
		t.Errorf("request for unknown project: status %d, want 404", r.Status)
	}
	if _, err := e.DB.AnswerRequest(e.AdminCtx(), token, true); err != nil {
		t.Fatal(err)
	}
	var got requestJSON
	api.Call("GET", "/api/v1/requests/"+itoa(rq.ID), nil, &got)
	if got.Status != app.RequestAccepted {
		t.Errorf("status after accept = %q, want accepted", got.Status)
	}
	var l struct {
		Items []requestJSON `json:"items"`
		Total int           `json:"total"`
	}
	api.Call("GET", "/api/v1/requests?project_id="+itoa(p.ID)+"&status=accepted", nil, &l)
	if l.Total != 1 || len(l.Items) != 1 {
		t.Errorf("accepted requests of project = %d, want 1", l.Total)
	}
	api.Call("GET", "/api/v1/requests?project_id="+itoa(p.ID)+"&offset=50", nil, &l)
	if l.Total != 1 || len(l.Items) != 0 {
		t.Errorf("requests past the end: total %d items %d, want 1 0", l.Total, len(l.Items))
	}
	if r := api.Call("GET", "/api/v1/requests?status=maybe", nil, nil); r.Status != http.StatusUnprocessableEntity {
		t.Errorf("bad status filter: %d, want 422", r.Status)
	}
	r = api.Call("POST", "/api/v1/requests/"+itoa(rq.ID)+"/cancel", nil, &got)
	if r.Status != http.StatusOK || got.Status != app.RequestCancelled {
		t.Errorf("cancel: %d %q", r.Status, got.Status)
	}
}
