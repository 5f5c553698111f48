package http

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"stagesub.dev/app"
)

// apiHandler returns the status and the value to encode as JSON.
type apiHandler func(w http.ResponseWriter, r *http.Request) (int, any, error)

// api wraps a JSON API handler: it authenticates the bearer token (401 with
// WWW-Authenticate when missing or wrong), caps the body at MaxJSONBytes
// and maps errors to statuses: EINVALID 422 with field messages, ENOTFOUND
// 404, ECONFLICT 409, EFORBIDDEN 403, others 500.
func (s *Server) api(h apiHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		token, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="stagesub"`)
			writeJSONError(w, http.StatusUnauthorized, app.EUNAUTHORIZED, "An API token is required: Authorization: Bearer <token>.", nil)
			return
		}
		u, err := s.cfg.Users.FindUserByAPIToken(r.Context(), token)
		if err != nil {
			if app.ErrorCode(err) == app.EUNAUTHORIZED {
				w.Header().Set("WWW-Authenticate", `Bearer realm="stagesub", error="invalid_token"`)
			}
			s.writeAPIError(w, r, err)
			return
		}
		r = r.WithContext(app.WithUser(r.Context(), u))
		if r.Body != nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !limitBody(w, r, MaxJSONBytes) {
				writeJSONError(w, http.StatusRequestEntityTooLarge, app.EINVALID, fmt.Sprintf("The body exceeds %d bytes.", MaxJSONBytes), nil)
				return
			}
		}
		status, v, err := h(w, r)
		if err != nil {
			s.writeAPIError(w, r, err)
			return
		}
		writeJSON(w, status, v)
	}
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "Internal error.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// errorBody is the JSON of every API error.
type errorBody struct {
	Error struct {
		Code    string            `json:"code"`
		Message string            `json:"message"`
		Fields  map[string]string `json:"fields,omitempty"`
	} `json:"error"`
}

func writeJSONError(w http.ResponseWriter, status int, code, msg string, fields map[string]string) {
	var b errorBody
	b.Error.Code, b.Error.Message, b.Error.Fields = code, msg, fields
	writeJSON(w, status, b)
}

func (s *Server) writeAPIError(w http.ResponseWriter, r *http.Request, err error) {
	if isTooLarge(err) {
		writeJSONError(w, http.StatusRequestEntityTooLarge, app.EINVALID, fmt.Sprintf("The body exceeds %d bytes.", MaxJSONBytes), nil)
		return
	}
	s.logError(r, err)
	writeJSONError(w, statusOf(err), app.ErrorCode(err), app.ErrorMessage(err), app.ErrorFields(err))
}

// decodeJSON decodes the body into v, rejecting other content types,
// unknown fields, trailing data and malformed JSON as EINVALID (422).
func decodeJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return app.Errorf(app.EINVALID, "Content-Type must be application/json.")
		}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if isTooLarge(err) {
			return err
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return &app.Error{Code: app.EINVALID, Message: "Please correct the highlighted fields.",
				Fields: map[string]string{te.Field: "must be a " + jsonKind(te.Type.Kind().String())}}
		}
		if errors.Is(err, io.EOF) {
			return app.Errorf(app.EINVALID, "The request body is empty; send a JSON object.")
		}
		return app.Errorf(app.EINVALID, "The request body is not valid JSON: %v.", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if isTooLarge(err) {
			return err
		}
		return app.Errorf(app.EINVALID, "The request body must hold exactly one JSON object.")
	}
	return nil
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "int", "int32", "int64", "uint", "uint32", "uint64", "float64":
		return "number"
	}
	return k
}

// list is the JSON of a page of items.
type list[T any] struct {
	Items  []T    `json:"items"`
	Total  int    `json:"total"`
	Limit  int    `json:"limit"`
	Offset int    `json:"offset"`
	Next   string `json:"next,omitempty"` // URL of the next page, absent on the last
}

// pageParams reads ?limit= (1..MaxLimit, default DefaultLimit) and ?offset=
// (≥ 0); bad values are EINVALID with field messages.
func pageParams(r *http.Request) (app.Page, error) {
	q := r.URL.Query()
	p := app.Page{Limit: app.DefaultLimit}
	v := app.NewValidator()
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > app.MaxLimit {
			v.Set("limit", fmt.Sprintf("must be a whole number from 1 to %d", app.MaxLimit))
		}
		p.Limit = n
	}
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 1_000_000_000 {
			v.Set("offset", "must be a whole number ≥ 0")
		}
		p.Offset = n
	}
	return p, v.Err()
}

func newList[T any](r *http.Request, items []T, total int, p app.Page) list[T] {
	if items == nil {
		items = []T{}
	}
	l := list[T]{Items: items, Total: total, Limit: p.Limit, Offset: p.Offset}
	if p.Offset+len(items) < total {
		q := r.URL.Query()
		q.Set("limit", strconv.Itoa(p.Limit))
		q.Set("offset", strconv.Itoa(p.Offset+p.Limit))
		l.Next = (&url.URL{Path: r.URL.Path, RawQuery: q.Encode()}).String()
	}
	return l
}

func (s *Server) apiMe(w http.ResponseWriter, r *http.Request) (int, any, error) {
	return http.StatusOK, app.UserFromContext(r.Context()), nil
}

// --- musicians ---

func (s *Server) apiMusicians(w http.ResponseWriter, r *http.Request) (int, any, error) {
	p, err := pageParams(r)
	if err != nil {
		return 0, nil, err
	}
	f := app.MusicianFilter{Query: r.URL.Query().Get("q"), Page: p}
	if msg := app.CheckText(f.Query, 0, 200); msg != "" {
		return 0, nil, &app.Error{Code: app.EINVALID, Message: "Please correct the highlighted fields.", Fields: map[string]string{"q": msg}}
	}
	switch r.URL.Query().Get("active") {
	case "", "false":
	case "true":
		f.ActiveOnly = true
	default:
		return 0, nil, &app.Error{Code: app.EINVALID, Message: "Please correct the highlighted fields.", Fields: map[string]string{"active": "must be true or false"}}
	}
	ms, total, err := s.cfg.Musicians.FindMusicians(r.Context(), f)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, newList(r, ms, total, p), nil
}

func (s *Server) apiMusician(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r)
	if err != nil {
		return 0, nil, err
	}
	m, err := s.cfg.Musicians.FindMusicianByID(r.Context(), id)
	return http.StatusOK, m, err
}

func (s *Server) apiMusicianCreate(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if !app.UserFromContext(r.Context()).CanWrite() {
		return 0, nil, app.Errorf(app.EFORBIDDEN, "Your role may not change data.")
	}
	var in app.MusicianInput
	if err := decodeJSON(r, &in); err != nil {
		return 0, nil, err
	}
	m, err := s.cfg.Musicians.CreateMusician(r.Context(), in)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Location", fmt.Sprintf("/api/v1/musicians/%d", m.ID))
	return http.StatusCreated, m, nil
}

func (s *Server) apiMusicianUpdate(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r)
	if err != nil {
		return 0, nil, err
	}
	if !app.UserFromContext(r.Context()).CanWrite() {
		return 0, nil, app.Errorf(app.EFORBIDDEN, "Your role may not change data.")
	}
	var in app.MusicianInput
	if err := decodeJSON(r, &in); err != nil {
		return 0, nil, err
	}
	m, err := s.cfg.Musicians.UpdateMusician(r.Context(), id, in)
	return http.StatusOK, m, err
}

func (s *Server) apiMusicianDeactivate(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r)
	if err != nil {
		return 0, nil, err
	}
	m, err := s.cfg.Musicians.DeactivateMusician(r.Context(), id)
	return http.StatusOK, m, err
}

// --- projects ---

func (s *Server) apiProjects(w http.ResponseWriter, r *http.Request) (int, any, error) {
	p, err := pageParams(r)
	if err != nil {
		return 0, nil, err
	}
	ps, total, err := s.cfg.Projects.FindProjects(r.Context(), app.ProjectFilter{Page: p})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, newList(r, ps, total, p), nil
}

func (s *Server) apiProject(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r)
	if err != nil {
		return 0, nil, err
	}
	p, err := s.cfg.Projects.FindProjectByID(r.Context(), id)
	return http.StatusOK, p, err
}

func (s *Server) apiProjectCreate(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if !app.UserFromContext(r.Context()).CanWrite() {
		return 0, nil, app.Errorf(app.EFORBIDDEN, "Your role may not change data.")
	}
	var in app.ProjectInput
	if err := decodeJSON(r, &in); err != nil {
		return 0, nil, err
	}
	p, err := s.cfg.Projects.CreateProject(r.Context(), in)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Location", fmt.Sprintf("/api/v1/projects/%d", p.ID))
	return http.StatusCreated, p, nil
}

func (s *Server) apiProjectUpdate(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r)
	if err != nil {
		return 0, nil, err
	}
	if !app.UserFromContext(r.Context()).CanWrite() {
		return 0, nil, app.Errorf(app.EFORBIDDEN, "Your role may not change data.")
	}
	var in app.ProjectInput
	if err := decodeJSON(r, &in); err != nil {
		return 0, nil, err
	}
	p, err := s.cfg.Projects.UpdateProject(r.Context(), id, in)
	return http.StatusOK, p, err
}

// --- requests ---

// apiRequestJSON is a request with its answer link (for staff to send).
type apiRequestJSON struct {
	*app.Request
	AnswerURL string `json:"answer_url"`
}

func (s *Server) requestJSON(r *http.Request, rq *app.Request) apiRequestJSON {
	return apiRequestJSON{Request: rq, AnswerURL: answerURL(r, rq.AnswerToken)}
}

var requestStatuses = map[string]bool{"": true, app.RequestPending: true, app.RequestAccepted: true, app.RequestDeclined: true, app.RequestCancelled: true}

func (s *Server) apiRequests(w http.ResponseWriter, r *http.Request) (int, any, error) {
	p, err := pageParams(r)
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	f := app.RequestFilter{Status: q.Get("status"), Page: p}
	v := app.NewValidator()
	if !requestStatuses[f.Status] {
		v.Set("status", "must be one of pending, accepted, declined, cancelled")
	}
	if s := q.Get("project_id"); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			v.Set("project_id", "must be a positive whole number")
		}
		f.ProjectID = id
	}
	if err := v.Err(); err != nil {
		return 0, nil, err
	}
	rs, total, err := s.cfg.Requests.FindRequests(r.Context(), f)
	if err != nil {
		return 0, nil, err
	}
	out := make([]apiRequestJSON, len(rs))
	for i, rq := range rs {
		out[i] = s.requestJSON(r, rq)
	}
	return http.StatusOK, newList(r, out, total, p), nil
}

func (s *Server) apiRequest(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r)
	if err != nil {
		return 0, nil, err
	}
	rq, err := s.cfg.Requests.FindRequestByID(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.requestJSON(r, rq), nil
}

func (s *Server) apiRequestCreate(w http.ResponseWriter, r *http.Request) (int, any, error) {
	if !app.UserFromContext(r.Context()).CanWrite() {
		return 0, nil, app.Errorf(app.EFORBIDDEN, "Your role may not change data.")
	}
	var in app.RequestInput
	if err := decodeJSON(r, &in); err != nil {
		return 0, nil, err
	}
	rq, err := s.cfg.Requests.CreateRequest(r.Context(), in)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Location", fmt.Sprintf("/api/v1/requests/%d", rq.ID))
	return http.StatusCreated, s.requestJSON(r, rq), nil
}

func (s *Server) apiRequestCancel(w http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r)
	if err != nil {
		return 0, nil, err
	}
	rq, err := s.cfg.Requests.CancelRequest(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.requestJSON(r, rq), nil
}
