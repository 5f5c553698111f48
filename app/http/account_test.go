package http_test

import (
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"stagesub.dev/app"
	apphttp "stagesub.dev/app/http"
)

// slowLimit allows 3 wrong password attempts per client, then one an hour.
func slowLimit(c *apphttp.Config) { c.LoginRate = rate.Every(time.Hour); c.LoginBurst = 3 }

// tryLogin posts the login form with extra headers and returns the status.
func (b *browser) tryLogin(email, pw string, header ...string) resp {
	b.t.Helper()
	tok := b.CSRF("/login")
	return b.Post("/login", url.Values{"csrf": {tok}, "email": {email}, "password": {pw}}, header...)
}

func TestLoginRateLimit(t *testing.T) {
	t.Run("LimitedBeforeCheck", func(t *testing.T) {
		e := MustEnv(t, slowLimit)
		b := e.Browser()
		tests := []struct {
			pw   string
			want int
		}{
			{"wrong-1", http.StatusUnauthorized},
			{"wrong-2", http.StatusUnauthorized},
			{"wrong-3", http.StatusUnauthorized},
			{"wrong-4", http.StatusTooManyRequests},
			{adminPass, http.StatusTooManyRequests}, // the right password, too late
		}
		for i, tt := range tests {
			r := b.tryLogin(adminEmail, tt.pw)
			if got := r.Status; got != tt.want {
				t.Errorf("attempt %d (%s) = %d, want %d", i, tt.pw, got, tt.want)
			}
			if tt.want == http.StatusTooManyRequests {
				if r.Header.Get("Retry-After") == "" {
					t.Errorf("attempt %d: 429 without Retry-After", i)
				}
				if !strings.Contains(r.Body, "Too many login attempts") {
					t.Errorf("attempt %d: 429 page lacks the message", i)
				}
			}
		}
	})

	t.Run("RightPasswordSpendsNothing", func(t *testing.T) {
		e := MustEnv(t, slowLimit)
		for i := range 6 {
			if got, want := e.Browser().tryLogin(adminEmail, adminPass).Status, http.StatusSeeOther; got != want {
				t.Fatalf("login %d = %d, want %d", i, got, want)
			}
		}
	})

	// The test server's peer is 127.0.0.1: by default a trusted proxy, so
	// X-Forwarded-For names the client; with other trusted proxies it is
	// ignored and the peer is the client.
	tests := []struct {
		name    string
		trusted []netip.Prefix
		want    int // a right password from another X-Forwarded-For client after the peer's limit is spent
	}{
		{"TrustedPeerForwardsClient", nil, http.StatusSeeOther},
		{"UntrustedPeerXFFIgnored", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, http.StatusTooManyRequests},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := MustEnv(t, slowLimit, func(c *apphttp.Config) { c.TrustedProxies = tt.trusted })
			b := e.Browser()
			for range 4 {
				b.tryLogin(adminEmail, "wrong", "X-Forwarded-For", "198.51.100.1")
			}
			if got, want := b.tryLogin(adminEmail, adminPass, "X-Forwarded-For", "198.51.100.1").Status, http.StatusTooManyRequests; got != want {
				t.Fatalf("limited client = %d, want %d", got, want)
			}
			if got := b.tryLogin(adminEmail, adminPass, "X-Forwarded-For", "198.51.100.1, 203.0.113.9").Status; got != tt.want {
				t.Errorf("other client = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestPasswordChange(t *testing.T) {
	const newPass = "a brand new passphrase"
	e := MustEnv(t)
	u := e.MustUser(app.RoleStaff, "anna@example.org")
	other := e.Browser() // a second session of the same user, ended by the change
	other.Login(u.Email, staffPass)
	b := e.Browser()
	b.Login(u.Email, staffPass)
	tok := b.CSRF("/account")

	form := func(cur, nw, confirm string) url.Values {
		return url.Values{"csrf": {tok}, "current_password": {cur}, "new_password": {nw}, "confirm_password": {confirm}}
	}
	errs := []struct {
		name   string
		form   url.Values
		header []string
		want   int
		body   string
	}{
		{"ErrNoCSRF", url.Values{"current_password": {staffPass}, "new_password": {newPass}, "confirm_password": {newPass}}, nil, http.StatusForbidden, ""},
		{"ErrCrossOrigin", form(staffPass, newPass, newPass), []string{"Origin", "https://evil.example"}, http.StatusForbidden, ""},
		{"ErrWrongCurrent", form("not-my-password", newPass, newPass), nil, http.StatusUnprocessableEntity, "Current password is not your current password"},
		{"ErrNoCurrent", form("", newPass, newPass), nil, http.StatusUnprocessableEntity, "Current password is required"},
		{"ErrShort", form(staffPass, "short-pass1", "short-pass1"), nil, http.StatusUnprocessableEntity, "must be 12 to 1024 characters"},
		{"ErrLong", form(staffPass, strings.Repeat("x", 1025), strings.Repeat("x", 1025)), nil, http.StatusUnprocessableEntity, "must be 12 to 1024 characters"},
		{"ErrMismatch", form(staffPass, newPass, newPass+"!"), nil, http.StatusUnprocessableEntity, "does not match"},
		{"ErrSame", form("staff-password-old", "staff-password-old", "staff-password-old"), nil, http.StatusUnprocessableEntity, "must differ"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			r := b.Post("/account/password", tt.form, tt.header...)
			if got := r.Status; got != tt.want {
				t.Errorf("status = %d, want %d", got, tt.want)
			}
			if !strings.Contains(r.Body, tt.body) {
				t.Errorf("body lacks %q", tt.body)
			}
		})
	}
	if got, want := other.Get("/").Status, http.StatusOK; got != want {
		t.Fatalf("other session after failed changes = %d, want %d", got, want)
	}

	t.Run("OK", func(t *testing.T) {
		r := b.Post("/account/password", form(staffPass, newPass, newPass))
		if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/account?password=1" {
			t.Fatalf("status %d Location %q, want 303 /account?password=1", r.Status, r.Header.Get("Location"))
		}
		checks := []struct {
			name string
			got  int
			want int
		}{
			{"ThisSessionStays", b.Get("/account").Status, http.StatusOK},
			{"OtherSessionEnded", other.Get("/").Status, http.StatusSeeOther},
			{"OldPasswordRefused", e.Browser().tryLogin(u.Email, staffPass).Status, http.StatusUnauthorized},
			{"NewPasswordWorks", e.Browser().tryLogin(u.Email, newPass).Status, http.StatusSeeOther},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: status = %d, want %d", c.name, c.got, c.want)
			}
		}
		d, err := e.DB.Dashboard(e.AdminCtx())
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, a := range d.Recent {
			found = found || (a.Action == "user.password" && a.Actor == u.Email && a.Subject == u.Email)
		}
		if !found {
			t.Errorf("activity log lacks user.password by %s: %+v", u.Email, d.Recent)
		}
	})
}

func TestPasswordChangeRateLimit(t *testing.T) {
	e := MustEnv(t, slowLimit)
	b := e.Browser()
	b.Login(adminEmail, adminPass)
	tok := b.CSRF("/account")
	tests := []struct {
		current string
		want    int
	}{
		{"guess-number-1", http.StatusUnprocessableEntity},
		{"", http.StatusUnprocessableEntity}, // no password checked: spends nothing
		{"guess-number-2", http.StatusUnprocessableEntity},
		{"guess-number-3", http.StatusUnprocessableEntity},
		{"guess-number-4", http.StatusTooManyRequests},
		{adminPass, http.StatusTooManyRequests},
	}
	for i, tt := range tests {
		r := b.Post("/account/password", url.Values{"csrf": {tok}, "current_password": {tt.current},
			"new_password": {"another long password"}, "confirm_password": {"another long password"}})
		if got := r.Status; got != tt.want {
			t.Errorf("attempt %d (%q) = %d, want %d", i, tt.current, got, tt.want)
		}
	}
}

var oneTimeRe = regexp.MustCompile(`aria-label="one-time password"`)
var oneTimeValueRe = regexp.MustCompile(`value="([A-Za-z0-9_-]{20})" aria-label="one-time password"`)

func TestUsersHTML(t *testing.T) {
	e := MustEnv(t)
	e.MustUser(app.RoleStaff, "staff@example.org")
	admin := e.Browser()
	admin.Login(adminEmail, adminPass)
	tok := admin.CSRF("/users")
	staff := e.Browser()
	staff.Login("staff@example.org", staffPass)
	staffTok := staff.CSRF("/account")

	tests := []struct {
		name string
		b    *browser
		form url.Values // nil: GET /users
		want int
		body string
	}{
		{"List", admin, nil, http.StatusOK, "staff@example.org"},
		{"ErrStaffList", staff, nil, http.StatusForbidden, ""},
		{"ErrStaffCreate", staff, url.Values{"csrf": {staffTok}, "email": {"x@example.org"}, "role": {"admin"}}, http.StatusForbidden, ""},
		{"ErrNoCSRF", admin, url.Values{"email": {"x@example.org"}, "role": {"staff"}}, http.StatusForbidden, ""},
		{"ErrBadRole", admin, url.Values{"csrf": {tok}, "email": {"x@example.org"}, "role": {"root"}}, http.StatusUnprocessableEntity, "Role must be admin, staff or viewer"},
		{"ErrBadEmail", admin, url.Values{"csrf": {tok}, "email": {"nope"}, "role": {"staff"}}, http.StatusUnprocessableEntity, "Email "},
		{"ErrDuplicate", admin, url.Values{"csrf": {tok}, "email": {"STAFF@example.org"}, "role": {"staff"}}, http.StatusConflict, "already taken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r resp
			if tt.form == nil {
				r = tt.b.Get("/users")
			} else {
				r = tt.b.Post("/users", tt.form)
			}
			if got := r.Status; got != tt.want {
				t.Errorf("status = %d, want %d", got, tt.want)
			}
			if !strings.Contains(r.Body, tt.body) {
				t.Errorf("body lacks %q", tt.body)
			}
			if oneTimeRe.MatchString(r.Body) {
				t.Error("a one-time password is shown without a created user")
			}
		})
	}

	t.Run("Create", func(t *testing.T) {
		r := admin.Post("/users", url.Values{"csrf": {tok}, "email": {"new@example.org"}, "name": {"New Person"}, "role": {"viewer"}})
		if got, want := r.Status, http.StatusOK; got != want {
			t.Fatalf("status = %d, want %d", got, want)
		}
		m := oneTimeValueRe.FindStringSubmatch(r.Body)
		if m == nil {
			t.Fatalf("no one-time password on the page:\n%s", r.Body)
		}
		if got := admin.Get("/users").Body; strings.Contains(got, m[1]) {
			t.Error("the one-time password is shown again")
		}
		nb := e.Browser()
		nb.Login("new@example.org", m[1])
		if !strings.Contains(nb.Get("/account").Body, "role <strong>viewer</strong>") {
			t.Error("new user is not a viewer")
		}
		d, err := e.DB.Dashboard(e.AdminCtx())
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, a := range d.Recent {
			found = found || (a.Action == "user.create" && a.Actor == adminEmail && a.Subject == "new@example.org")
		}
		if !found {
			t.Errorf("activity log lacks user.create by %s: %+v", adminEmail, d.Recent)
		}
	})
}
