// Package localcluster runs a real Kubernetes control plane on loopback for tests and
// the demo: etcd, kube-apiserver (with RBAC and optional audit log),
// kube-controller-manager, kube-scheduler, and KWOK simulating kubelets for the nodes
// it is given. Everything the product promises about PodDisruptionBudgets, evictions
// and rescheduling is checked against this, not against a fake.
package localcluster

import (
	"bytes"
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
)

//go:embed kwok.yaml.tmpl
var kwokConfigTemplate string

// Options tune a cluster; the zero value is a sensible test cluster.
type Options struct {
	// Dir holds certificates, kubeconfigs, etcd data and logs. Empty: a new
	// temporary directory, removed by Stop.
	Dir string
	// Detached leaves the processes running when this process exits (make cluster-up);
	// StopDir stops them later. Otherwise they die with this process.
	Detached bool
	// AuditLog turns on the API server's audit log (JSON lines, Metadata level for
	// writes) at Cluster.AuditLogPath.
	AuditLog bool
	// PodReadyDelay is how long a scheduled pod takes to turn Ready (default 2s): long
	// enough that PDBs refuse evictions while replacements start, as they would for real.
	PodReadyDelay time.Duration
	// PodDeleteDelay is how long a terminating pod takes to go away (default 200ms).
	PodDeleteDelay time.Duration
	// NodeReadyDelay is how long a new KWOK node takes to turn Ready (default 0).
	NodeReadyDelay time.Duration
	// JobRunTime is how long a Job's pod runs before it completes (default 1h, so a
	// running Job is there to be seen).
	JobRunTime time.Duration
	// Logger receives progress; default discards.
	Logger *slog.Logger
}

// Cluster is a running control plane.
type Cluster struct {
	// Dir holds everything the cluster wrote.
	Dir string
	// Kubeconfig is an admin kubeconfig (system:masters) for people and tools.
	Kubeconfig string
	// Config is the admin REST config; Client a clientset built from it.
	Config *rest.Config
	Client kubernetes.Interface
	// AuditLogPath is the audit log, when Options.AuditLog is set.
	AuditLogPath string
	// StartupTime is how long Start took from the first process to all healthy.
	StartupTime time.Duration

	server  string
	ca      *authority
	procs   []*process
	tempDir bool
	log     *slog.Logger
}

type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start builds nothing: it runs the binaries in BinDir (see EnsureBinaries) and
// returns once every component reports healthy. On error everything started is
// stopped again.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	bin := BinDir()
	if missing := missingBinaries(bin); len(missing) > 0 {
		return nil, fmt.Errorf("control-plane binaries missing from %s: %s (run `make cluster-binaries` or hack/build-k8s.sh; the first build takes 15-25 minutes)",
			bin, strings.Join(missing, ", "))
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{Dir: opts.Dir, log: log}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "rebalancer-cluster-"); err != nil {
			return nil, fmt.Errorf("creating cluster directory: %w", err)
		}
		c.tempDir = true
	} else if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating cluster directory: %w", err)
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	start := time.Now()

	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	etcdPort, etcdPeer, apiPort, kcmPort, schedPort, kwokPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	c.server = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	pki := filepath.Join(c.Dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, err
	}
	if c.ca, err = newAuthority(); err != nil {
		return nil, err
	}
	if err := c.ca.writeTo(pki); err != nil {
		return nil, fmt.Errorf("writing CA: %w", err)
	}
	serving, err := c.ca.sign("kube-apiserver", nil, true)
	if err != nil {
		return nil, err
	}
	servingCert, servingKey, err := serving.write(pki, "apiserver")
	if err != nil {
		return nil, err
	}
	saPub, saKey, err := writeServiceAccountKeys(pki)
	if err != nil {
		return nil, err
	}
	kubeconfigs := map[string]string{}
	for _, id := range []struct{ file, cn, org string }{
		{"admin", "rebalancer-admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kwok", "kwok", "system:masters"},
	} {
		var orgs []string
		if id.org != "" {
			orgs = []string{id.org}
		}
		kp, err := c.ca.sign(id.cn, orgs, false)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(c.Dir, id.file+".kubeconfig")
		if err := writeKubeconfig(path, c.server, c.ca.certPEM, id.cn, kp); err != nil {
			return nil, err
		}
		kubeconfigs[id.file] = path
		if id.file == "admin" {
			c.Config = restConfig(c.server, c.ca.certPEM, kp)
		}
	}
	c.Kubeconfig = kubeconfigs["admin"]
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	if err := c.run(opts, "etcd", filepath.Join(bin, "etcd"),
		"--name=default",
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync", "--log-level=warn",
	); err != nil {
		return nil, err
	}
	if err := c.waitHealthy(ctx, "etcd", etcdURL+"/health", 30*time.Second); err != nil {
		return nil, err
	}

	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(apiPort),
		"--endpoint-reconciler-type=none", // a loopback advertise address is refused otherwise
		"--tls-cert-file=" + servingCert, "--tls-private-key-file=" + servingKey,
		"--client-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--service-account-key-file=" + saPub, "--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// Pods are created right after their namespace in tests; without this plugin
		// they need not wait for the default service account (KWOK runs no containers).
		"--disable-admission-plugins=ServiceAccount",
		"--cert-dir=" + pki,
	}
	if opts.AuditLog {
		policy := filepath.Join(c.Dir, "audit-policy.yaml")
		if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
			return nil, err
		}
		c.AuditLogPath = filepath.Join(c.Dir, "audit.log")
		apiArgs = append(apiArgs, "--audit-policy-file="+policy, "--audit-log-path="+c.AuditLogPath,
			"--audit-log-format=json", "--audit-log-mode=blocking")
	}
	if err := c.run(opts, "kube-apiserver", filepath.Join(bin, "kube-apiserver"), apiArgs...); err != nil {
		return nil, err
	}
	if err := c.waitHealthy(ctx, "kube-apiserver", c.server+"/readyz", 60*time.Second); err != nil {
		return nil, err
	}

	kcm := kubeconfigs["controller-manager"]
	if err := c.run(opts, "kube-controller-manager", filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig="+kcm, "--authentication-kubeconfig="+kcm, "--authorization-kubeconfig="+kcm,
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(kcmPort),
		"--service-account-private-key-file="+saKey, "--root-ca-file="+filepath.Join(pki, "ca.crt"),
		"--use-service-account-credentials=true",
		"--cluster-cidr=10.244.0.0/16", "--service-cluster-ip-range=10.0.0.0/24",
		"--cert-dir="+filepath.Join(c.Dir, "kcm-certs"),
	); err != nil {
		return nil, err
	}
	sched := kubeconfigs["scheduler"]
	if err := c.run(opts, "kube-scheduler", filepath.Join(bin, "kube-scheduler"),
		"--kubeconfig="+sched, "--authentication-kubeconfig="+sched, "--authorization-kubeconfig="+sched,
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(schedPort),
		"--cert-dir="+filepath.Join(c.Dir, "scheduler-certs"),
	); err != nil {
		return nil, err
	}
	kwokConfig, err := c.writeKwokConfig(opts)
	if err != nil {
		return nil, err
	}
	if err := c.run(opts, "kwok", filepath.Join(bin, "kwok"),
		"--kubeconfig="+kubeconfigs["kwok"],
		"--config="+kwokConfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+KwokNodeAnnotation+"=fake",
		"--node-lease-duration-seconds=40",
		"--server-address=127.0.0.1:"+strconv.Itoa(kwokPort),
		"--cidr=10.244.0.0/16",
	); err != nil {
		return nil, err
	}
	for _, h := range []struct{ name, url string }{
		{"kube-controller-manager", "https://127.0.0.1:" + strconv.Itoa(kcmPort) + "/healthz"},
		{"kube-scheduler", "https://127.0.0.1:" + strconv.Itoa(schedPort) + "/healthz"},
		{"kwok", "http://127.0.0.1:" + strconv.Itoa(kwokPort) + "/healthz"},
	} {
		if err := c.waitHealthy(ctx, h.name, h.url, 60*time.Second); err != nil {
			return nil, err
		}
	}
	if err := c.waitDefaultServiceAccount(ctx); err != nil {
		return nil, err
	}
	c.StartupTime = time.Since(start)
	log.Info("local cluster ready", "startup", c.StartupTime.Round(10*time.Millisecond), "server", c.server, "kubeconfig", c.Kubeconfig)
	if opts.Detached {
		if err := c.writePIDs(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// KwokNodeAnnotation marks the nodes KWOK simulates a kubelet for.
const KwokNodeAnnotation = kwok.NodeAnnotation

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  verbs: ["get", "list", "watch"]
- level: None
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
- level: None
  resources:
  - group: ""
    resources: ["events"]
  - group: events.k8s.io
    resources: ["events"]
- level: Metadata
`

func (c *Cluster) writeKwokConfig(opts Options) (string, error) {
	ms := func(d, def time.Duration) int64 {
		if d == 0 {
			d = def
		}
		return d.Milliseconds()
	}
	tmpl, err := template.New("kwok").Delims("[[", "]]").Parse(kwokConfigTemplate)
	if err != nil {
		return "", fmt.Errorf("parsing kwok config template: %w", err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, map[string]int64{
		"PodReadyDelayMS":  ms(opts.PodReadyDelay, 2*time.Second),
		"PodDeleteDelayMS": ms(opts.PodDeleteDelay, 200*time.Millisecond),
		"NodeReadyDelayMS": ms(opts.NodeReadyDelay, time.Millisecond),
		"JobRunMS":         ms(opts.JobRunTime, time.Hour),
	}); err != nil {
		return "", fmt.Errorf("rendering kwok config: %w", err)
	}
	path := filepath.Join(c.Dir, "kwok.yaml")
	return path, os.WriteFile(path, buf.Bytes(), 0o600)
}

// run starts one component, logging to <dir>/logs/<name>.log.
func (c *Cluster) run(opts Options, name, path string, args ...string) error {
	logs := filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(logs, 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(logs, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s log: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = c.Dir
	// Own process group, so Stop reaches children; unless detached, the kernel kills
	// the component when this process dies, even by SIGKILL or a test timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !opts.Detached {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	c.log.Debug("started", "component", name, "pid", cmd.Process.Pid)
	return nil
}

func (c *Cluster) waitHealthy(ctx context.Context, name, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // loopback health probe of our own components
	if strings.HasPrefix(url, c.server) {
		// The API server's readyz needs a client certificate under RBAC.
		tc, err := rest.TLSConfigFor(c.Config)
		if err != nil {
			return err
		}
		tr = &http.Transport{TLSClientConfig: tc}
	}
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	defer tr.CloseIdleConnections()
	var last string
	for {
		if p := c.exited(name); p != nil {
			return fmt.Errorf("%s exited during startup (%v); its log: %s\n%s", name, p.err, c.logPath(name), tail(c.logPath(name), 20))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy after %s (last probe: %s); its log: %s\n%s", name, timeout, last, c.logPath(name), tail(c.logPath(name), 20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitDefaultServiceAccount waits for the controller manager to be doing its job:
// the default namespace's service account exists.
func (c *Cluster) waitDefaultServiceAccount(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-controller-manager did not create the default service account: %w (log: %s)", err, c.logPath("kube-controller-manager"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) exited(name string) *process {
	for _, p := range c.procs {
		if p.name == name {
			select {
			case <-p.done:
				return p
			default:
			}
		}
	}
	return nil
}

func (c *Cluster) logPath(name string) string { return filepath.Join(c.Dir, "logs", name+".log") }

// Log returns the last lines of a component's log, for test failure messages.
func (c *Cluster) Log(name string, lines int) string { return tail(c.logPath(name), lines) }

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop ends every component, newest first (the API server before etcd, or it retries
// etcd for seconds), and removes a temporary directory. It is safe to call twice.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		select {
		case <-p.done:
			continue
		default:
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	c.procs = nil
	_ = os.Remove(filepath.Join(c.Dir, pidFile))
	if c.tempDir {
		_ = os.RemoveAll(c.Dir)
	}
}

const pidFile = "pids"

func (c *Cluster) writePIDs() error {
	var b strings.Builder
	for _, p := range c.procs {
		fmt.Fprintf(&b, "%d %s\n", p.cmd.Process.Pid, p.name)
	}
	return os.WriteFile(filepath.Join(c.Dir, pidFile), []byte(b.String()), 0o600)
}

// StopDir stops a detached cluster started with Options.Dir = dir. It reports
// whether there was one.
func StopDir(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) < 1 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		deadline := time.Now().Add(5 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	return true, os.Remove(filepath.Join(dir, pidFile))
}

// freePorts asks the kernel for n unused loopback ports.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
