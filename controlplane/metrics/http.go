package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/packetparamedic/reflector/controlplane/health"
)

// Health statuses reported by /health.
const (
	StatusOK       = "ok"       // serving; HTTP 200
	StatusDegraded = "degraded" // a health check failed (package health): no grants; HTTP 503
	StatusDraining = "draining" // shutting down: no new sessions; HTTP 503
)

// Health is the body of GET /health. The caller's health function fills in
// everything but Status, which the handler derives: draining when Draining
// is set, degraded when AuditOK or IdentityOK is false or a check failed,
// ok otherwise.
type Health struct {
	Status     string     `json:"status"`
	Version    string     `json:"version"`
	EndpointID string     `json:"endpoint_id"`
	UptimeSec  int64      `json:"uptime_sec"`
	Load       [3]float64 `json:"load"`
	AuditOK    bool       `json:"audit_ok"`
	IdentityOK bool       `json:"identity_ok"`
	// Draining is set once shutdown started (lame duck: /health fails
	// first, so load balancers stop sending new work).
	Draining bool `json:"draining"`
	// Checks are the health definition's named checks (package health);
	// any failed one makes the status degraded.
	Checks []health.Check `json:"checks"`
	// Problems are short operator-facing descriptions of what is wrong
	// (e.g. the audit log's write error); never nil in the JSON.
	Problems []string `json:"problems"`
}

// derive sets Status and returns the HTTP status code.
func (h *Health) derive() int {
	if h.Problems == nil {
		h.Problems = []string{}
	}
	switch {
	case h.Draining:
		h.Status = StatusDraining
	case !h.AuditOK || !h.IdentityOK || !health.Healthy(h.Checks):
		h.Status = StatusDegraded
	default:
		h.Status = StatusOK
		return http.StatusOK
	}
	return http.StatusServiceUnavailable
}

// NewHandler serves GET (and HEAD) /metrics in the Prometheus exposition
// format from m's registry and /health as JSON from health, which is called
// once per request and must be cheap and safe for concurrent use. Other
// paths answer 404, other methods 405.
func NewHandler(m *Metrics, health func() Health) http.Handler {
	mux := http.NewServeMux()
	if m != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
			ErrorHandling:       promhttp.ContinueOnError,
			Registry:            m.reg,
			MaxRequestsInFlight: 4,
			Timeout:             10 * time.Second,
		}))
	}
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		h := health()
		code := h.derive()
		body, err := json.Marshal(h)
		if err != nil {
			http.Error(w, "encode health: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_, _ = w.Write(append(body, '\n'))
	})
	return mux
}

// Timeouts of the HTTP server started by Serve.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	shutdownTimeout   = 5 * time.Second
	maxHeaderBytes    = 16 << 10
)

// Serve listens on addr and serves h until ctx ends, then shuts the server
// down gracefully (bounded by a few seconds). It returns the bound address
// once the listener is ready (use port 0 in tests), or the listen error.
// The server has read-header, read, write and idle timeouts and a small
// header limit, so slow or idle clients cannot pin it.
func Serve(ctx context.Context, addr string, h http.Handler) (net.Addr, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Serve closes ln and returns ErrServerClosed after Shutdown; an
		// Accept failure (not temporary) also ends it, and /metrics then
		// stops answering, which the scraper reports as target down.
		_ = srv.Serve(ln)
	}()
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	}()
	return ln.Addr(), nil
}
