package http

import (
	"bytes"
	"crypto/subtle"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"stagesub.dev/app"
)

//go:embed templates/*.html static/style.css static/favicon.svg
var assets embed.FS

// Cookie names.
const (
	SessionCookie = "stagesub_session"
	CSRFCookie    = "stagesub_csrf" // for forms shown before login (login, answer)
	CSRFField     = "csrf"
)

type pages struct {
	byName map[string]*template.Template
}

var funcs = template.FuncMap{
	"date": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Format("2006-01-02")
	},
	"datetime": func(t time.Time) string { return t.Local().Format("2006-01-02 15:04") },
	"add":      func(a, b int) int { return a + b },
	"selected": func(a, b string) bool { return a == b },
}

func parsePages() (*pages, error) {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, n := range names {
		if n == "templates/layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("http: parse %s: %w", n, err)
		}
		p.byName[strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")] = t
	}
	return p, nil
}

// handleFavicon serves the site icon (SVG), public like the stylesheet, so
// browsers asking for /favicon.ico get an icon rather than a 404.
func handleFavicon(w http.ResponseWriter, r *http.Request) {
	b, _ := assets.ReadFile("static/favicon.svg")
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.Write(b)
}

func handleCSS(w http.ResponseWriter, r *http.Request) {
	b, _ := assets.ReadFile("static/style.css")
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Write(b)
}

// reqCtx is what page handlers know about the visitor.
type reqCtx struct {
	sess *app.Session // nil on anonymous pages
	csrf string       // token to put in forms
}

func (c *reqCtx) user() *app.User {
	if c.sess == nil {
		return nil
	}
	return c.sess.User
}

// view is the data of every page; page-specific data goes in D.
type view struct {
	Title  string
	Tenant string
	User   *app.User
	CSRF   string
	Flash  string
	Error  string
	Fields map[string]string
	D      any
}

type pageHandler func(w http.ResponseWriter, r *http.Request, c *reqCtx) error

func setSecurityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Cache-Control", "no-store")
}

// page wraps a handler for logged-in staff: it loads the session from the
// cookie (redirecting to /login without one) and, on POST, parses the form
// (413 over MaxFormBytes) and checks its CSRF token against the session's.
func (s *Server) page(h pageHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w)
		var sess *app.Session
		if ck, err := r.Cookie(SessionCookie); err == nil {
			sess, err = s.cfg.Users.FindSession(r.Context(), ck.Value)
			if err != nil && app.ErrorCode(err) != app.EUNAUTHORIZED {
				s.renderError(w, r, &reqCtx{}, err)
				return
			}
		}
		if sess == nil {
			next := "/"
			if r.Method == http.MethodGet {
				next = r.URL.RequestURI()
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(next), http.StatusSeeOther)
			return
		}
		c := &reqCtx{sess: sess, csrf: sess.CSRFToken}
		r = r.WithContext(app.WithUser(r.Context(), sess.User))
		if r.Method == http.MethodPost && !s.checkForm(w, r, c, sess.CSRFToken) {
			return
		}
		if err := h(w, r, c); err != nil {
			s.renderError(w, r, c, err)
		}
	}
}

// anon wraps a handler for visitors without a session (login, answer
// links). Their forms carry a CSRF token that must equal the CSRFCookie
// (double submit), set here when missing.
func (s *Server) anon(h pageHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w)
		c := &reqCtx{}
		if ck, err := r.Cookie(CSRFCookie); err == nil && len(ck.Value) == 43 {
			c.csrf = ck.Value
		}
		if r.Method == http.MethodPost {
			if !s.checkForm(w, r, c, c.csrf) {
				return
			}
		} else if c.csrf == "" {
			c.csrf = app.NewToken()
			http.SetCookie(w, &http.Cookie{Name: CSRFCookie, Value: c.csrf, Path: "/", HttpOnly: true,
				Secure: isHTTPS(r), SameSite: http.SameSiteLaxMode})
		}
		if err := h(w, r, c); err != nil {
			s.renderError(w, r, c, err)
		}
	}
}

// checkForm parses a POSTed form and checks its CSRF token and Origin; on
// failure it answers (413 or 403) and returns false.
func (s *Server) checkForm(w http.ResponseWriter, r *http.Request, c *reqCtx, want string) bool {
	if !limitBody(w, r, MaxFormBytes) {
		s.renderStatus(w, r, c, http.StatusRequestEntityTooLarge, "The form is too large.")
		return false
	}
	if err := r.ParseForm(); err != nil {
		if isTooLarge(err) {
			s.renderStatus(w, r, c, http.StatusRequestEntityTooLarge, "The form is too large.")
		} else {
			s.renderStatus(w, r, c, http.StatusBadRequest, "The form could not be read.")
		}
		return false
	}
	got := r.PostForm.Get(CSRFField)
	if want == "" || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 || !sameOrigin(r) {
		s.renderStatus(w, r, c, http.StatusForbidden, "The form has expired or did not come from this site. Please go back, reload the page and try again.")
		return false
	}
	return true
}

// sameOrigin reports whether the Origin header, when present, names the host
// the client used (Host or X-Forwarded-Host).
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host) || strings.EqualFold(u.Host, r.Header.Get(HeaderForwardedHost))
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, c *reqCtx, status int, name string, v view) {
	t := s.pages.byName[name]
	if t == nil {
		s.log.Error("no such template", "name", name)
		http.Error(w, "Internal error.", http.StatusInternalServerError)
		return
	}
	v.Tenant = s.cfg.Tenant
	v.User = c.user()
	v.CSRF = c.csrf
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", v); err != nil {
		s.log.Error("render template", "name", name, "err", err)
		http.Error(w, "Internal error.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (s *Server) renderStatus(w http.ResponseWriter, r *http.Request, c *reqCtx, status int, msg string) {
	s.render(w, r, c, status, "error", view{Title: http.StatusText(status), Error: msg, D: status})
}

// renderError shows err as a page with the status of its code. An expired
// session redirects to the login page.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, c *reqCtx, err error) {
	s.logError(r, err)
	if app.ErrorCode(err) == app.EUNAUTHORIZED {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	s.renderStatus(w, r, c, statusOf(err), app.ErrorMessage(err))
}

func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w)
	s.renderStatus(w, r, &reqCtx{}, http.StatusNotFound, "There is no such page.")
}

// pageNumber reads ?page=N (1 when absent or bad).
func pageNumber(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || n < 1 || n > 100000 {
		return 1
	}
	return n
}

// pager is the data of a list's page links.
type pager struct {
	Page, Pages, Total int
	Prev, Next         string
}

func newPager(r *http.Request, page, perPage, total int) pager {
	p := pager{Page: page, Total: total, Pages: (total + perPage - 1) / perPage}
	link := func(n int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(n))
		return r.URL.Path + "?" + q.Encode()
	}
	if page > 1 {
		p.Prev = link(page - 1)
	}
	if page < p.Pages {
		p.Next = link(page + 1)
	}
	return p
}

// --- login ---

// safeNext returns next when it is a local path, else "/".
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}

func (s *Server) handleLoginForm(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	s.render(w, r, c, http.StatusOK, "login", view{Title: "Log in", D: map[string]string{"Next": safeNext(r.URL.Query().Get("next"))}})
	return nil
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	email := strings.TrimSpace(r.PostForm.Get("email"))
	next := safeNext(r.PostForm.Get("next"))
	// The limit comes before the password check: a limited client gets 429
	// whatever it sends, and costs no password hash.
	refund, ok := s.allowAttempt(w, r, "login", func() {
		s.render(w, r, c, http.StatusTooManyRequests, "login", view{Title: "Log in",
			Error: "Too many login attempts. Please wait a minute and try again.",
			D:     map[string]string{"Next": next, "Email": email}})
	})
	if !ok {
		return nil
	}
	u, err := s.cfg.Users.Authenticate(r.Context(), email, r.PostForm.Get("password"))
	if err == nil {
		refund() // only wrong passwords count against the limit
	}
	if app.ErrorCode(err) == app.EUNAUTHORIZED {
		s.render(w, r, c, http.StatusUnauthorized, "login", view{Title: "Log in", Error: app.ErrorMessage(err),
			D: map[string]string{"Next": next, "Email": email}})
		return nil
	}
	if err != nil {
		return err
	}
	sess, err := s.cfg.Users.CreateSession(r.Context(), u, s.cfg.SessionTTL)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: sess.Token, Path: "/", HttpOnly: true,
		Secure: isHTTPS(r), SameSite: http.SameSiteLaxMode, Expires: sess.ExpiresAt})
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.cfg.Users.DeleteSession(r.Context(), c.sess.Token); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", HttpOnly: true,
		Secure: isHTTPS(r), SameSite: http.SameSiteLaxMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
	return nil
}

// --- dashboard ---

func (s *Server) handleDashboard(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	d, err := s.cfg.Dashboard.Dashboard(r.Context())
	if err != nil {
		return err
	}
	s.render(w, r, c, http.StatusOK, "dashboard", view{Title: "Dashboard", D: d})
	return nil
}

// --- musicians ---

const perPage = 50

type musiciansView struct {
	Query     string
	Musicians []*app.Musician
	Pager     pager
}

func (s *Server) handleMusicians(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if len(q) > 200 {
		q = q[:200]
	}
	page := pageNumber(r)
	ms, total, err := s.cfg.Musicians.FindMusicians(r.Context(), app.MusicianFilter{Query: q, Page: app.Page{Offset: (page - 1) * perPage, Limit: perPage}})
	if err != nil {
		return err
	}
	s.render(w, r, c, http.StatusOK, "musicians", view{Title: "Musicians", D: musiciansView{Query: q, Musicians: ms, Pager: newPager(r, page, perPage, total)}})
	return nil
}

type musicianFormView struct {
	Musician *app.Musician // nil when new
	In       app.MusicianInput
	Active   bool
}

func musicianInput(r *http.Request, withActive bool) app.MusicianInput {
	f := r.PostForm
	in := app.MusicianInput{Name: f.Get("name"), Instrument: f.Get("instrument"), Email: f.Get("email"), Phone: f.Get("phone"), Notes: f.Get("notes")}
	if withActive {
		active := f.Get("active") == "on"
		in.Active = &active
	}
	return in
}

func (s *Server) handleMusicianNew(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !c.user().CanWrite() {
		return app.Errorf(app.EFORBIDDEN, "Your role may not add musicians.")
	}
	s.render(w, r, c, http.StatusOK, "musician_form", view{Title: "New musician", D: musicianFormView{Active: true}})
	return nil
}

func (s *Server) handleMusicianCreate(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	in := musicianInput(r, false)
	m, err := s.cfg.Musicians.CreateMusician(r.Context(), in)
	if app.ErrorCode(err) == app.EINVALID {
		s.render(w, r, c, http.StatusUnprocessableEntity, "musician_form", view{Title: "New musician", Error: app.ErrorMessage(err),
			Fields: app.ErrorFields(err), D: musicianFormView{In: in, Active: true}})
		return nil
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/musicians/%d?saved=1", m.ID), http.StatusSeeOther)
	return nil
}

func (s *Server) handleMusicianEdit(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	m, err := s.cfg.Musicians.FindMusicianByID(r.Context(), id)
	if err != nil {
		return err
	}
	v := view{Title: m.Name, D: musicianFormView{Musician: m, Active: m.Active,
		In: app.MusicianInput{Name: m.Name, Instrument: m.Instrument, Email: m.Email, Phone: m.Phone, Notes: m.Notes}}}
	switch {
	case r.URL.Query().Has("saved"):
		v.Flash = "Saved."
	case r.URL.Query().Has("deactivated"):
		v.Flash = "The musician is now inactive."
	}
	s.render(w, r, c, http.StatusOK, "musician_form", v)
	return nil
}

func (s *Server) handleMusicianUpdate(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	in := musicianInput(r, true)
	m, err := s.cfg.Musicians.UpdateMusician(r.Context(), id, in)
	if app.ErrorCode(err) == app.EINVALID {
		old, ferr := s.cfg.Musicians.FindMusicianByID(r.Context(), id)
		if ferr != nil {
			return ferr
		}
		s.render(w, r, c, http.StatusUnprocessableEntity, "musician_form", view{Title: old.Name, Error: app.ErrorMessage(err),
			Fields: app.ErrorFields(err), D: musicianFormView{Musician: old, In: in, Active: *in.Active}})
		return nil
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/musicians/%d?saved=1", m.ID), http.StatusSeeOther)
	return nil
}

func (s *Server) handleMusicianDeactivate(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	if _, err := s.cfg.Musicians.DeactivateMusician(r.Context(), id); err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/musicians/%d?deactivated=1", id), http.StatusSeeOther)
	return nil
}

// --- projects ---

type projectsView struct {
	Projects []*app.Project
	Pager    pager
}

func (s *Server) handleProjects(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	page := pageNumber(r)
	ps, total, err := s.cfg.Projects.FindProjects(r.Context(), app.ProjectFilter{Page: app.Page{Offset: (page - 1) * perPage, Limit: perPage}})
	if err != nil {
		return err
	}
	s.render(w, r, c, http.StatusOK, "projects", view{Title: "Projects", D: projectsView{Projects: ps, Pager: newPager(r, page, perPage, total)}})
	return nil
}

type projectFormView struct {
	Project  *app.Project
	In       app.ProjectInput
	Statuses []string
}

func projectInput(r *http.Request) app.ProjectInput {
	f := r.PostForm
	return app.ProjectInput{Name: f.Get("name"), StartsOn: f.Get("starts_on"), EndsOn: f.Get("ends_on"),
		Venue: f.Get("venue"), Description: f.Get("description"), Status: f.Get("status")}
}

func (s *Server) handleProjectNew(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !c.user().CanWrite() {
		return app.Errorf(app.EFORBIDDEN, "Your role may not add projects.")
	}
	s.render(w, r, c, http.StatusOK, "project_form", view{Title: "New project",
		D: projectFormView{In: app.ProjectInput{Status: app.ProjectPlanned}, Statuses: app.ProjectStatuses}})
	return nil
}

func (s *Server) handleProjectCreate(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	in := projectInput(r)
	p, err := s.cfg.Projects.CreateProject(r.Context(), in)
	if app.ErrorCode(err) == app.EINVALID {
		s.render(w, r, c, http.StatusUnprocessableEntity, "project_form", view{Title: "New project", Error: app.ErrorMessage(err),
			Fields: app.ErrorFields(err), D: projectFormView{In: in, Statuses: app.ProjectStatuses}})
		return nil
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/projects/%d?saved=1", p.ID), http.StatusSeeOther)
	return nil
}

func (s *Server) handleProjectEdit(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	p, err := s.cfg.Projects.FindProjectByID(r.Context(), id)
	if err != nil {
		return err
	}
	in := app.ProjectInput{Name: p.Name, StartsOn: p.StartsOn.String(), EndsOn: p.EndsOn.String(), Venue: p.Venue, Description: p.Description, Status: p.Status}
	s.render(w, r, c, http.StatusOK, "project_form", view{Title: "Edit " + p.Name, D: projectFormView{Project: p, In: in, Statuses: app.ProjectStatuses}})
	return nil
}

func (s *Server) handleProjectUpdate(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	in := projectInput(r)
	p, err := s.cfg.Projects.UpdateProject(r.Context(), id, in)
	if app.ErrorCode(err) == app.EINVALID {
		old, ferr := s.cfg.Projects.FindProjectByID(r.Context(), id)
		if ferr != nil {
			return ferr
		}
		s.render(w, r, c, http.StatusUnprocessableEntity, "project_form", view{Title: "Edit " + old.Name, Error: app.ErrorMessage(err),
			Fields: app.ErrorFields(err), D: projectFormView{Project: old, In: in, Statuses: app.ProjectStatuses}})
		return nil
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/projects/%d?saved=1", p.ID), http.StatusSeeOther)
	return nil
}

type projectView struct {
	Project   *app.Project
	Requests  []*app.Request
	Links     map[int64]string // request id → answer link
	Musicians []*app.Musician  // active, for the request form
	MQuery    string
	In        app.RequestInput
}

func (s *Server) projectView(r *http.Request, id int64) (*projectView, error) {
	ctx := r.Context()
	p, err := s.cfg.Projects.FindProjectByID(ctx, id)
	if err != nil {
		return nil, err
	}
	reqs, _, err := s.cfg.Requests.FindRequests(ctx, app.RequestFilter{ProjectID: id, Page: app.Page{Limit: app.MaxLimit}})
	if err != nil {
		return nil, err
	}
	mq := strings.TrimSpace(r.URL.Query().Get("mq"))
	if len(mq) > 200 {
		mq = mq[:200]
	}
	ms, _, err := s.cfg.Musicians.FindMusicians(ctx, app.MusicianFilter{Query: mq, ActiveOnly: true, Page: app.Page{Limit: app.MaxLimit}})
	if err != nil {
		return nil, err
	}
	links := make(map[int64]string, len(reqs))
	for _, rq := range reqs {
		links[rq.ID] = answerURL(r, rq.AnswerToken)
	}
	return &projectView{Project: p, Requests: reqs, Links: links, Musicians: ms, MQuery: mq}, nil
}

func answerURL(r *http.Request, token string) string { return baseURL(r) + "/r/" + token }

func (s *Server) handleProject(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	pv, err := s.projectView(r, id)
	if err != nil {
		return err
	}
	v := view{Title: pv.Project.Name, D: pv}
	switch {
	case r.URL.Query().Has("saved"):
		v.Flash = "Saved."
	case r.URL.Query().Has("sent"):
		v.Flash = "Request created. Send the musician the answer link shown below."
	case r.URL.Query().Has("cancelled"):
		v.Flash = "Request cancelled."
	}
	s.render(w, r, c, http.StatusOK, "project", v)
	return nil
}

func (s *Server) handleRequestCreate(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	mid, _ := strconv.ParseInt(r.PostForm.Get("musician_id"), 10, 64)
	in := app.RequestInput{ProjectID: id, MusicianID: mid, Position: r.PostForm.Get("position"), Message: r.PostForm.Get("message")}
	_, err = s.cfg.Requests.CreateRequest(r.Context(), in)
	if code := app.ErrorCode(err); code == app.EINVALID || code == app.ECONFLICT {
		pv, perr := s.projectView(r, id)
		if perr != nil {
			return perr
		}
		pv.In = in
		s.render(w, r, c, statusOf(err), "project", view{Title: pv.Project.Name, Error: app.ErrorMessage(err), Fields: app.ErrorFields(err), D: pv})
		return nil
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/projects/%d?sent=1", id), http.StatusSeeOther)
	return nil
}

func (s *Server) handleRequestCancel(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	rq, err := s.cfg.Requests.CancelRequest(r.Context(), id)
	if err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/projects/%d?cancelled=1", rq.ProjectID), http.StatusSeeOther)
	return nil
}

// --- answer links ---

type answerView struct {
	Request *app.Request
	Token   string
	Done    bool
}

func (s *Server) handleAnswerForm(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	w.Header().Set("Referrer-Policy", "no-referrer") // the URL holds the secret
	rq, err := s.cfg.Requests.FindRequestByToken(r.Context(), r.PathValue("token"))
	if err != nil {
		return err
	}
	s.render(w, r, c, http.StatusOK, "answer", view{Title: "Substitute request", D: answerView{Request: rq, Token: r.PathValue("token")}})
	return nil
}

func (s *Server) handleAnswer(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	w.Header().Set("Referrer-Policy", "no-referrer")
	token := r.PathValue("token")
	var accept bool
	switch r.PostForm.Get("answer") {
	case "accept":
		accept = true
	case "decline":
	default:
		return app.Errorf(app.EINVALID, "Please choose accept or decline.")
	}
	rq, err := s.cfg.Requests.AnswerRequest(r.Context(), token, accept)
	if app.ErrorCode(err) == app.ECONFLICT {
		s.render(w, r, c, http.StatusConflict, "answer", view{Title: "Substitute request", Error: app.ErrorMessage(err), D: answerView{Request: rq, Token: token}})
		return nil
	}
	if err != nil {
		return err
	}
	s.render(w, r, c, http.StatusOK, "answer", view{Title: "Thank you", D: answerView{Request: rq, Token: token, Done: true}})
	return nil
}

// --- account and API tokens ---

// accountView is the data of the account page.
type accountView struct {
	Token string // a new API token, shown once
}

func (s *Server) handleAccount(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	v := view{Title: "Account", D: accountView{}}
	if r.URL.Query().Has("password") {
		v.Flash = "Your password has been changed. Your other sessions have ended."
	}
	s.render(w, r, c, http.StatusOK, "account", v)
	return nil
}

// handlePasswordChange sets the logged-in user's password after checking
// the current one (rate limited like the login), ends their other sessions
// and keeps this one.
func (s *Server) handlePasswordChange(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	in := app.PasswordChange{Current: f.Get("current_password"), New: f.Get("new_password"), Confirm: f.Get("confirm_password")}
	refund, ok := s.allowAttempt(w, r, "password change", func() {
		s.render(w, r, c, http.StatusTooManyRequests, "account", view{Title: "Account",
			Error: "Too many password attempts. Please wait a minute and try again.", D: accountView{}})
	})
	if !ok {
		return nil
	}
	err := s.cfg.Users.ChangePassword(r.Context(), in, c.sess.Token)
	if _, wrongCurrent := app.ErrorFields(err)["current"]; !wrongCurrent || in.Current == "" {
		refund() // only a checked, wrong current password counts
	}
	if code := app.ErrorCode(err); code == app.EINVALID || code == app.ECONFLICT {
		s.render(w, r, c, statusOf(err), "account", view{Title: "Account", Error: app.ErrorMessage(err),
			Fields: app.ErrorFields(err), D: accountView{}})
		return nil
	}
	if err != nil {
		return err
	}
	s.log.Info("password changed", "user", c.user().ID, "request_id", r.Header.Get(HeaderRequestID))
	http.Redirect(w, r, "/account?password=1", http.StatusSeeOther)
	return nil
}

func (s *Server) handleTokenCreate(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	token, err := s.cfg.Users.CreateAPIToken(r.Context(), c.user(), strings.TrimSpace(r.PostForm.Get("name")))
	if app.ErrorCode(err) == app.EINVALID {
		s.render(w, r, c, http.StatusUnprocessableEntity, "account", view{Title: "Account", Error: app.ErrorMessage(err), Fields: app.ErrorFields(err), D: accountView{}})
		return nil
	}
	if err != nil {
		return err
	}
	s.render(w, r, c, http.StatusOK, "account", view{Title: "Account", Flash: "Token created. Copy it now: it is not shown again.", D: accountView{Token: token}})
	return nil
}

// --- staff users (admins only) ---

// usersView is the data of the users page.
type usersView struct {
	Users    []*app.User
	In       app.UserInput // the create form's values (never a password)
	Roles    []string
	Created  *app.User // the user just created
	Password string    // Created's one-time password, shown once
}

var roles = []string{app.RoleStaff, app.RoleViewer, app.RoleAdmin}

func (s *Server) usersPage(r *http.Request, uv usersView) (view, error) {
	users, err := s.cfg.Users.FindUsers(r.Context())
	if err != nil {
		return view{}, err
	}
	uv.Users, uv.Roles = users, roles
	if uv.In.Role == "" {
		uv.In.Role = app.RoleStaff
	}
	return view{Title: "Users", D: uv}, nil
}

func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	v, err := s.usersPage(r, usersView{})
	if err != nil {
		return err
	}
	s.render(w, r, c, http.StatusOK, "users", v)
	return nil
}

// handleUserCreate adds a staff user with a generated one-time password,
// shown once on the answer page (it is stored only as a hash).
func (s *Server) handleUserCreate(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !c.user().IsAdmin() {
		return app.Errorf(app.EFORBIDDEN, "Only administrators may add users.")
	}
	f := r.PostForm
	in := app.UserInput{Email: strings.TrimSpace(f.Get("email")), Name: strings.TrimSpace(f.Get("name")), Role: f.Get("role")}
	pw := app.NewOneTimePassword()
	created, err := s.cfg.Users.CreateUser(r.Context(), app.UserInput{Email: in.Email, Name: in.Name, Role: in.Role, Password: pw})
	if code := app.ErrorCode(err); code == app.EINVALID || code == app.ECONFLICT {
		v, verr := s.usersPage(r, usersView{In: in})
		if verr != nil {
			return verr
		}
		v.Error, v.Fields = app.ErrorMessage(err), app.ErrorFields(err)
		s.render(w, r, c, statusOf(err), "users", v)
		return nil
	}
	if err != nil {
		return err
	}
	s.log.Info("user created", "user", created.ID, "role", created.Role, "by", c.user().ID, "request_id", r.Header.Get(HeaderRequestID))
	v, err := s.usersPage(r, usersView{Created: created, Password: pw})
	if err != nil {
		return err
	}
	v.Flash = "User created. Give them the one-time password below; it is not shown again."
	s.render(w, r, c, http.StatusOK, "users", v)
	return nil
}
