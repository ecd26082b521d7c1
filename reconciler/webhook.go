package reconciler

import (
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/google/go-github/v60/github"
)

// maxPayload is GitHub's own cap on a webhook payload.
const maxPayload = 25 << 20

// Webhook serves GitHub push webhooks at /hooks/github. A delivery whose
// X-Hub-Signature-256 does not match the secret gets 401. A valid push only
// triggers a pass: nothing in the payload is trusted — the pass fetches and reads
// first-parent history of the watched branch, whatever commit the payload names —
// and a pass finding that only status/ changed does nothing.
type Webhook struct {
	secret  []byte
	trigger func(reason string)
	log     *slog.Logger
	metrics *Metrics
}

// NewWebhook returns the handler; secret must not be empty.
func NewWebhook(secret []byte, r *Reconciler, log *slog.Logger) (*Webhook, error) {
	if len(secret) == 0 {
		return nil, errors.New("the webhook secret is empty: GitHub deliveries could not be verified")
	}
	return &Webhook{secret: secret, trigger: r.Trigger, log: log, metrics: r.metrics}, nil
}

// SetTrigger replaces what a valid push does (default: the reconciler's Trigger).
// The controller uses it to hand deliveries reaching a standby to the leader.
func (h *Webhook) SetTrigger(f func(reason string)) { h.trigger = f }

func (h *Webhook) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxPayload))
	if err != nil {
		h.metrics.webhooks.WithLabelValues("bad-request").Inc()
		http.Error(w, "reading the payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	sig := req.Header.Get(github.SHA256SignatureHeader)
	if sig == "" {
		h.refuse(w, req, "no "+github.SHA256SignatureHeader+" header")
		return
	}
	if err := github.ValidateSignature(sig, body, h.secret); err != nil {
		h.refuse(w, req, "the signature does not match the secret")
		return
	}
	event := req.Header.Get(github.EventTypeHeader)
	delivery := req.Header.Get(github.DeliveryIDHeader)
	switch event {
	case "ping":
		h.metrics.webhooks.WithLabelValues("ignored").Inc()
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "pong\n")
	case "push":
		h.metrics.webhooks.WithLabelValues("triggered").Inc()
		h.log.Info("webhook: push delivered; fetching", "delivery", delivery)
		h.trigger(TriggerWebhook)
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "fetch triggered\n")
	default:
		h.metrics.webhooks.WithLabelValues("ignored").Inc()
		w.WriteHeader(http.StatusNoContent)
	}
}

func (h *Webhook) refuse(w http.ResponseWriter, req *http.Request, why string) {
	h.metrics.webhooks.WithLabelValues("unauthorized").Inc()
	h.log.Warn("webhook delivery refused", "reason", why, "remote", req.RemoteAddr, "delivery", req.Header.Get(github.DeliveryIDHeader))
	http.Error(w, "unauthorized: "+why, http.StatusUnauthorized)
}
