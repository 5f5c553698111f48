package http_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"stagesub.dev/app"
)

func TestLogin(t *testing.T) {
	e := MustEnv(t)

	t.Run("RedirectsToLogin", func(t *testing.T) {
		b := e.Browser()
		r := b.Get("/musicians?q=x")
		if got, want := r.Status, http.StatusSeeOther; got != want {
			t.Fatalf("status = %d, want %d", got, want)
		}
		if got, want := r.Header.Get("Location"), "/login?next="+url.QueryEscape("/musicians?q=x"); got != want {
			t.Errorf("Location = %q, want %q", got, want)
		}
	})

	t.Run("ErrNoCSRF", func(t *testing.T) {
		b := e.Browser()
		b.CSRF("/login") // sets the CSRF cookie
		r := b.Post("/login", url.Values{"email": {adminEmail}, "password": {adminPass}})
		if got, want := r.Status, http.StatusForbidden; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
	})

	t.Run("ErrWrongCSRF", func(t *testing.T) {
		b := e.Browser()
		b.CSRF("/login")
		r := b.Post("/login", url.Values{"csrf": {app.NewToken()}, "email": {adminEmail}, "password": {adminPass}})
		if got, want := r.Status, http.StatusForbidden; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
	})

	t.Run("ErrCrossOrigin", func(t *testing.T) {
		b := e.Browser()
		tok := b.CSRF("/login")
		req, _ := http.NewRequest(http.MethodPost, e.Srv.URL+"/login",
			strings.NewReader(url.Values{"csrf": {tok}, "email": {adminEmail}, "password": {adminPass}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		if got, want := b.Do(req).Status, http.StatusForbidden; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
	})

	t.Run("ErrWrongPassword", func(t *testing.T) {
		b := e.Browser()
		tok := b.CSRF("/login")
		r := b.Post("/login", url.Values{"csrf": {tok}, "email": {adminEmail}, "password": {"nope-nope"}})
		if got, want := r.Status, http.StatusUnauthorized; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
		if !strings.Contains(r.Body, "Wrong email or password") {
			t.Errorf("body lacks the error message")
		}
	})

	t.Run("OK", func(t *testing.T) {
		b := e.Browser()
		tok := b.CSRF("/login")
		req, _ := http.NewRequest(http.MethodPost, e.Srv.URL+"/login",
			strings.NewReader(url.Values{"csrf": {tok}, "email": {"ADMIN@example.org"}, "password": {adminPass}, "next": {"/projects"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-Proto", "https")
		r := b.Do(req)
		if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/projects" {
			t.Fatalf("status %d Location %q, want 303 /projects", r.Status, r.Header.Get("Location"))
		}
		ck := r.Header.Get("Set-Cookie")
		for _, want := range []string{"stagesub_session=", "HttpOnly", "Secure", "SameSite=Lax", "Path=/"} {
			if !strings.Contains(ck, want) {
				t.Errorf("Set-Cookie %q lacks %q", ck, want)
			}
		}
	})

	t.Run("OpenRedirect", func(t *testing.T) {
		b := e.Browser()
		tok := b.CSRF("/login")
		r := b.Post("/login", url.Values{"csrf": {tok}, "email": {adminEmail}, "password": {adminPass}, "next": {"//evil.example/"}})
		if got, want := r.Header.Get("Location"), "/"; got != want {
			t.Errorf("Location = %q, want %q", got, want)
		}
	})

	t.Run("Logout", func(t *testing.T) {
		b := e.Browser()
		b.Login(adminEmail, adminPass)
		if got, want := b.Get("/").Status, http.StatusOK; got != want {
			t.Fatalf("dashboard status = %d, want %d", got, want)
		}
		tok := b.CSRF("/")
		if got, want := b.Post("/logout", url.Values{"csrf": {tok}}).Status, http.StatusSeeOther; got != want {
			t.Fatalf("logout status = %d, want %d", got, want)
		}
		if got, want := b.Get("/").Status, http.StatusSeeOther; got != want {
			t.Errorf("dashboard after logout: status = %d, want %d", got, want)
		}
	})
}

func TestMusiciansHTML(t *testing.T) {
	e := MustEnv(t)
	b := e.Browser()
	b.Login(adminEmail, adminPass)
	tok := b.CSRF("/musicians/new")

	t.Run("ErrNoCSRF", func(t *testing.T) {
		r := b.Post("/musicians", url.Values{"name": {"Anna"}, "instrument": {"violin"}})
		if got, want := r.Status, http.StatusForbidden; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
	})

	t.Run("ErrValidation", func(t *testing.T) {
		r := b.Post("/musicians", url.Values{"csrf": {tok}, "name": {""}, "instrument": {strings.Repeat("x", 101)}, "email": {"not-an-email"}, "phone": {"call me"}})
		if got, want := r.Status, http.StatusUnprocessableEntity; got != want {
			t.Fatalf("status = %d, want %d", got, want)
		}
		for _, want := range []string{"Name is required", "Instrument must be at most 100 characters", "Email must be an email address", "Phone may only contain"} {
			if !strings.Contains(r.Body, want) {
				t.Errorf("body lacks %q", want)
			}
		}
	})

	t.Run("ErrTooLarge", func(t *testing.T) {
		r := b.Post("/musicians", url.Values{"csrf": {tok}, "name": {"A"}, "instrument": {"violin"}, "notes": {strings.Repeat("x", 70<<10)}})
		if got, want := r.Status, http.StatusRequestEntityTooLarge; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
	})

	var path string
	t.Run("Create", func(t *testing.T) {
		r := b.Post("/musicians", url.Values{"csrf": {tok}, "name": {"Anna <Lind>"}, "instrument": {"Violin"}, "email": {"anna@example.org"}, "phone": {"+46 70 123 45 67"}})
		if got, want := r.Status, http.StatusSeeOther; got != want {
			t.Fatalf("status = %d, want %d: %s", got, want, r.Body)
		}
		path = strings.TrimSuffix(r.Header.Get("Location"), "?saved=1")
		page := b.Get(path + "?saved=1")
		if !strings.Contains(page.Body, "Anna &lt;Lind&gt;") || !strings.Contains(page.Body, "Saved.") {
			t.Errorf("musician page lacks the escaped name or the flash")
		}
		b.Post("/musicians", url.Values{"csrf": {tok}, "name": {"Erik Berg"}, "instrument": {"cello"}})
	})

	t.Run("Search", func(t *testing.T) {
		tests := []struct {
			q          string
			anna, erik bool
		}{
			{"", true, true},
			{"anna", true, false},
			{"CELLO", false, true},
			{"viol", true, false},
			{"%", false, false},
		}
		for _, tt := range tests {
			body := b.Get("/musicians?q=" + url.QueryEscape(tt.q)).Body
			if got := strings.Contains(body, "Anna &lt;Lind&gt;"); got != tt.anna {
				t.Errorf("q=%q: Anna listed = %v, want %v", tt.q, got, tt.anna)
			}
			if got := strings.Contains(body, "Erik Berg"); got != tt.erik {
				t.Errorf("q=%q: Erik listed = %v, want %v", tt.q, got, tt.erik)
			}
		}
	})

	t.Run("Edit", func(t *testing.T) {
		r := b.Post(path, url.Values{"csrf": {tok}, "name": {"Anna Lind"}, "instrument": {"viola"}, "active": {"on"}})
		if got, want := r.Status, http.StatusSeeOther; got != want {
			t.Fatalf("status = %d, want %d: %s", got, want, r.Body)
		}
		if body := b.Get(path).Body; !strings.Contains(body, `value="viola"`) {
			t.Errorf("edit not saved")
		}
		r = b.Post(path, url.Values{"csrf": {tok}, "name": {""}, "instrument": {"viola"}})
		if got, want := r.Status, http.StatusUnprocessableEntity; got != want {
			t.Errorf("invalid edit: status = %d, want %d", got, want)
		}
	})

	t.Run("Deactivate", func(t *testing.T) {
		r := b.Post(path+"/deactivate", url.Values{"csrf": {tok}})
		if got, want := r.Status, http.StatusSeeOther; got != want {
			t.Fatalf("status = %d, want %d", got, want)
		}
		if body := b.Get(path).Body; !strings.Contains(body, "inactive") {
			t.Errorf("musician page does not say inactive")
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		for _, p := range []string{"/musicians/999999", "/musicians/abc", "/no/such/page"} {
			if got, want := b.Get(p).Status, http.StatusNotFound; got != want {
				t.Errorf("GET %s: status = %d, want %d", p, got, want)
			}
		}
	})
}

func TestPermissionsHTML(t *testing.T) {
	e := MustEnv(t)
	e.MustUser(app.RoleViewer, "viewer@example.org")
	b := e.Browser()
	b.Login("viewer@example.org", staffPass)
	tok := b.CSRF("/")
	if got, want := b.Get("/musicians").Status, http.StatusOK; got != want {
		t.Errorf("viewer GET /musicians: status = %d, want %d", got, want)
	}
	r := b.Post("/musicians", url.Values{"csrf": {tok}, "name": {"Anna"}, "instrument": {"violin"}})
	if got, want := r.Status, http.StatusForbidden; got != want {
		t.Errorf("viewer POST /musicians: status = %d, want %d", got, want)
	}
	if got, want := b.Get("/musicians/new").Status, http.StatusForbidden; got != want {
		t.Errorf("viewer GET /musicians/new: status = %d, want %d", got, want)
	}
}

func TestProjectsHTML(t *testing.T) {
	e := MustEnv(t)
	b := e.Browser()
	b.Login(adminEmail, adminPass)
	tok := b.CSRF("/projects/new")

	r := b.Post("/projects", url.Values{"csrf": {tok}, "name": {"Mahler 2"}, "starts_on": {"2027-03-10"}, "ends_on": {"2027-03-01"}, "status": {"bogus"}})
	if got, want := r.Status, http.StatusUnprocessableEntity; got != want {
		t.Fatalf("invalid project: status = %d, want %d", got, want)
	}
	for _, want := range []string{"End date must not be before the start date", "Status must be one of"} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("body lacks %q", want)
		}
	}
	r = b.Post("/projects", url.Values{"csrf": {tok}, "name": {"Mahler 2"}, "starts_on": {"2027-03-10"}, "ends_on": {"2027-03-12"}, "venue": {"Konserthuset"}})
	if got, want := r.Status, http.StatusSeeOther; got != want {
		t.Fatalf("create project: status = %d, want %d: %s", got, want, r.Body)
	}
	path := strings.TrimSuffix(r.Header.Get("Location"), "?saved=1")
	r = b.Post(path, url.Values{"csrf": {tok}, "name": {"Mahler 2 (Resurrection)"}, "starts_on": {"2027-03-10"}, "ends_on": {"2027-03-13"}, "status": {"confirmed"}})
	if got, want := r.Status, http.StatusSeeOther; got != want {
		t.Fatalf("update project: status = %d, want %d: %s", got, want, r.Body)
	}
	list := b.Get("/projects").Body
	for _, want := range []string{"Mahler 2 (Resurrection)", "2027-03-10 – 2027-03-13", "confirmed"} {
		if !strings.Contains(list, want) {
			t.Errorf("project list lacks %q", want)
		}
	}
	if got, want := b.Get(path+"/edit").Status, http.StatusOK; got != want {
		t.Errorf("edit page: status = %d, want %d", got, want)
	}
}

var (
	answerLinkRe = regexp.MustCompile(`value="(http://[^"]+/r/([A-Za-z0-9_-]{43}))"`)
	badgeRe      = regexp.MustCompile(`data-request="\d+">(\w+)<`)
)

// TestRequestFlow: staff send a request from the project page, the musician
// accepts through the link without login, the project page shows it.
func TestRequestFlow(t *testing.T) {
	e := MustEnv(t)
	ctx := e.AdminCtx()
	p, err := e.DB.CreateProject(ctx, app.ProjectInput{Name: "Brahms", StartsOn: "2027-05-01", EndsOn: "2027-05-03", Venue: "Stora salen"})
	if err != nil {
		t.Fatal(err)
	}
	anna, err := e.DB.CreateMusician(ctx, app.MusicianInput{Name: "Anna Lind", Instrument: "violin"})
	if err != nil {
		t.Fatal(err)
	}
	erik, err := e.DB.CreateMusician(ctx, app.MusicianInput{Name: "Erik Berg", Instrument: "cello"})
	if err != nil {
		t.Fatal(err)
	}
	staff := e.Browser()
	staff.Login(adminEmail, adminPass)
	ppath := "/projects/" + itoa(p.ID)
	tok := staff.CSRF(ppath)

	send := func(m *app.Musician, position string) resp {
		return staff.Post(ppath+"/requests", url.Values{"csrf": {tok}, "musician_id": {itoa(m.ID)}, "position": {position}})
	}
	if r := send(anna, ""); r.Status != http.StatusUnprocessableEntity || !strings.Contains(r.Body, "Position is required") {
		t.Errorf("empty position: status %d, want 422 with message", r.Status)
	}
	if r := send(anna, "2nd violin"); r.Status != http.StatusSeeOther {
		t.Fatalf("send: status %d, want 303: %s", r.Status, r.Body)
	}
	if r := send(anna, "2nd violin"); r.Status != http.StatusConflict {
		t.Errorf("duplicate open request: status %d, want 409", r.Status)
	}
	if r := send(erik, "cello"); r.Status != http.StatusSeeOther {
		t.Fatalf("send: status %d, want 303", r.Status)
	}

	page := staff.Get(ppath).Body
	links := answerLinkRe.FindAllStringSubmatch(page, -1)
	if len(links) != 2 {
		t.Fatalf("project page shows %d answer links, want 2", len(links))
	}
	if got := badgeRe.FindAllStringSubmatch(page, -1); len(got) != 2 || got[0][1] != "pending" || got[1][1] != "pending" {
		t.Fatalf("request states = %v, want 2 pending", got)
	}

	// The musician (no session) opens the link and accepts.
	for _, l := range links {
		musician := e.Browser()
		path := strings.TrimPrefix(l[1], e.Srv.URL)
		form := musician.Get(path)
		if form.Status != http.StatusOK || !strings.Contains(form.Body, "Brahms") {
			t.Fatalf("answer page: status %d", form.Status)
		}
		if got := form.Header.Get("Referrer-Policy"); got != "no-referrer" {
			t.Errorf("answer page Referrer-Policy = %q, want no-referrer", got)
		}
		csrf := csrfRe.FindStringSubmatch(form.Body)[1]
		if r := musician.Post(path, url.Values{"answer": {"accept"}}); r.Status != http.StatusForbidden {
			t.Errorf("answer without csrf: status %d, want 403", r.Status)
		}
		answer := "accept"
		if strings.Contains(form.Body, "Erik Berg") {
			answer = "decline"
		}
		r := musician.Post(path, url.Values{"csrf": {csrf}, "answer": {answer}})
		if r.Status != http.StatusOK || !strings.Contains(r.Body, "Thank you") {
			t.Fatalf("answer: status %d", r.Status)
		}
		if r := musician.Post(path, url.Values{"csrf": {csrf}, "answer": {"accept"}}); r.Status != http.StatusConflict {
			t.Errorf("second answer: status %d, want 409", r.Status)
		}
	}

	states := map[string]int{}
	for _, m := range badgeRe.FindAllStringSubmatch(staff.Get(ppath).Body, -1) {
		states[m[1]]++
	}
	if states["accepted"] != 1 || states["declined"] != 1 {
		t.Errorf("request states after answers = %v, want 1 accepted and 1 declined", states)
	}

	t.Run("ErrUnknownToken", func(t *testing.T) {
		b := e.Browser()
		if got, want := b.Get("/r/"+app.NewToken()).Status, http.StatusNotFound; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
		if got, want := b.Get("/r/short").Status, http.StatusNotFound; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
	})

	t.Run("Cancel", func(t *testing.T) {
		rs, _, err := e.DB.FindRequests(ctx, app.RequestFilter{ProjectID: p.ID, Status: app.RequestAccepted})
		if err != nil || len(rs) != 1 {
			t.Fatalf("accepted requests = %d, %v", len(rs), err)
		}
		r := staff.Post("/requests/"+itoa(rs[0].ID)+"/cancel", url.Values{"csrf": {tok}})
		if r.Status != http.StatusSeeOther {
			t.Fatalf("cancel: status %d", r.Status)
		}
		if r := staff.Post("/requests/"+itoa(rs[0].ID)+"/cancel", url.Values{"csrf": {tok}}); r.Status != http.StatusConflict {
			t.Errorf("cancel twice: status %d, want 409", r.Status)
		}
	})

	t.Run("Dashboard", func(t *testing.T) {
		body := staff.Get("/").Body
		for _, want := range []string{"request.accepted", "request.declined", "Anna Lind"} {
			if !strings.Contains(body, want) {
				t.Errorf("dashboard activity lacks %q", want)
			}
		}
	})
}

func TestFavicon(t *testing.T) {
	e := MustEnv(t)
	res := e.Browser().Get("/favicon.ico")
	if got, want := res.Status, http.StatusOK; got != want {
		t.Fatalf("status = %d, want %d", got, want)
	}
	if got, want := res.Header.Get("Content-Type"), "image/svg+xml"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
	if !strings.HasPrefix(res.Body, "<svg") {
		t.Errorf("body is not an SVG: %.40q", res.Body)
	}
}
