package main

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
)

// API serves the agents, messages and fleet endpoints.
type API struct {
	orch  *Orchestrator
	db    *DB
	fleet *Fleet // nil without a fleet lock
	log   *slog.Logger
}

// NewAPI returns the API over o, db and fleet (nil without a fleet lock);
// log nil discards its logs.
func NewAPI(o *Orchestrator, db *DB, fleet *Fleet, log *slog.Logger) *API {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &API{orch: o, db: db, fleet: fleet, log: log}
}

// probes are the health endpoints, served by instancelock.Health.
type probes struct {
	health, ready, live http.Handler
}

// routes returns the backend's handler:
//
//	GET    /api/health       readiness with details (instancelock.Health)
//	GET    /readyz           readiness: 200 running, 503 starting or stopping
//	GET    /livez            liveness: 200 while the process serves
//	GET    /api/agents       every agent started so far
//	POST   /api/agents       start an agent; body {"name": "..."} is optional
//	GET    /api/agents/{id}  one agent
//	DELETE /api/agents/{id}  stop an agent
//	GET    /api/messages     row counts per writing process and the last rows
//	GET    /api/fleet        the fleet lock: is this instance active, who holds it
func routes(api *API, p probes) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /api/health", p.health)
	mux.Handle("GET /readyz", p.ready)
	mux.Handle("GET /livez", p.live)
	mux.HandleFunc("GET /api/agents", api.listAgents)
	mux.HandleFunc("POST /api/agents", api.startAgent)
	mux.HandleFunc("GET /api/agents/{id}", api.getAgent)
	mux.HandleFunc("DELETE /api/agents/{id}", api.stopAgent)
	mux.HandleFunc("GET /api/messages", api.messages)
	mux.HandleFunc("GET /api/fleet", api.fleetStatus)
	return mux
}

type agentList struct {
	Agents []AgentInfo `json:"agents"`
	Active int         `json:"active"`
	Total  int         `json:"total"`
}

func (api *API) listAgents(w http.ResponseWriter, r *http.Request) {
	agents := api.orch.List()
	active := 0
	for _, a := range agents {
		if a.Status == AgentRunning {
			active++
		}
	}
	writeJSON(w, http.StatusOK, agentList{Agents: agents, Active: active, Total: len(agents)})
}

func (api *API) startAgent(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body must be empty or {\"name\": \"...\"}: "+err.Error())
		return
	}
	a, err := api.orch.Start(req.Name)
	if errors.Is(err, errStopping) || errors.Is(err, errStandby) {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Location", "/api/agents/"+a.ID)
	writeJSON(w, http.StatusCreated, a)
}

func (api *API) getAgent(w http.ResponseWriter, r *http.Request) {
	a, err := api.orch.Get(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (api *API) stopAgent(w http.ResponseWriter, r *http.Request) {
	a, err := api.orch.Stop(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, errNoAgent):
		writeError(w, http.StatusNotFound, err.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, a)
	}
}

type messageStats struct {
	Total   int64     `json:"total"`
	Writers []Writer  `json:"writers"`
	Recent  []Message `json:"recent"`
}

func (api *API) messages(w http.ResponseWriter, r *http.Request) {
	limit := 10
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit must be an integer in 0..1000")
			return
		}
		limit = n
	}
	var st messageStats
	var err error
	st.Total, st.Writers, st.Recent, err = api.db.Stats(r.Context(), limit)
	if err != nil {
		api.log.Warn("reading messages", "err", err)
		writeError(w, http.StatusServiceUnavailable, "database: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (api *API) fleetStatus(w http.ResponseWriter, r *http.Request) {
	if api.fleet == nil {
		writeError(w, http.StatusNotFound, "no fleet lock: this instance runs with the PID-file lock only (start it with -lock)")
		return
	}
	writeJSON(w, http.StatusOK, api.fleet.Status())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
