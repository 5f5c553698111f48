package proxy

import (
	"html/template"
	"net/http"
	"strconv"
	"time"
)

// page is a small HTML page the router answers itself, without proxying.
type page struct {
	Status     int
	Title      string
	Message    string
	RetryAfter time.Duration // sets Retry-After when > 0
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}} · StageSub</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}</style>
</head><body><h1>{{.Title}}</h1><p>{{.Message}}</p><p><small>StageSub · request {{.RequestID}}</small></p></body></html>
`))

// The router's pages, by situation.
var (
	pageUnknown     = page{Status: http.StatusNotFound, Title: "No orchestra here", Message: "There is no StageSub orchestra at this address. Check the spelling of the address."}
	pageNotFound    = page{Status: http.StatusNotFound, Title: "Not found", Message: "There is no page at this address."}
	pageSuspended   = page{Status: http.StatusForbidden, Title: "Account suspended", Message: "This orchestra's StageSub account is suspended. Please contact your administrator."}
	pageDeleting    = page{Status: http.StatusGone, Title: "Account closed", Message: "This orchestra's StageSub account is being closed."}
	pageApex        = page{Status: http.StatusOK, Title: "StageSub", Message: "Substitute musicians, managed. Each orchestra has its own address."}
	pageBadGateway  = page{Status: http.StatusBadGateway, Title: "Temporary error", Message: "The orchestra's service did not answer correctly. Please try again."}
	pageGatewayTime = page{Status: http.StatusGatewayTimeout, Title: "Temporary error", Message: "The orchestra's service took too long to answer. Please try again."}
	pageTooLarge    = page{Status: http.StatusRequestEntityTooLarge, Title: "Request too large", Message: "The request body is larger than allowed."}
)

func pageMaintenance(retry time.Duration) page {
	return page{Status: http.StatusServiceUnavailable, Title: "Down for maintenance", Message: "This orchestra's StageSub is being maintained. Please try again in a moment.", RetryAfter: retry}
}

func pageProvisioning(retry time.Duration) page {
	return page{Status: http.StatusServiceUnavailable, Title: "Being set up", Message: "This orchestra's StageSub is being set up. Please try again in a moment.", RetryAfter: retry}
}

func pageNoInstance(retry time.Duration) page {
	return page{Status: http.StatusServiceUnavailable, Title: "Temporarily unavailable", Message: "This orchestra's StageSub is restarting. Please try again in a moment.", RetryAfter: retry}
}

// write sends p with requestID shown on it.
func (p page) write(w http.ResponseWriter, requestID string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((p.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(p.Status)
	_ = pageTmpl.Execute(w, struct {
		page
		RequestID string
	}{p, requestID})
}
