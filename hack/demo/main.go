// Command demo is `make demo`: the main job of rebalancer, end to end, on this
// machine, showing every command as a user would type it.
//
// It starts the local control plane (its own directory under a temporary one),
// creates 6 older, expensive KWOK nodes in node group "general" and the workloads
// of deploy/examples/demo/workloads.yaml (PDBs; a local PV pins one node, a pod
// opts out of another), and serves a bare git repository holding the policy of
// deploy/examples/demo over git's smart HTTP on loopback. Then: `rebalancer
// analyze -o table`; `rebalancer propose` with the plain-git forge (the branch,
// its diff and the reviewer summary); a reviewer's merge with the git command
// line; `rebalancer controller --once --log-format progress` running the plan
// with the rolling strategy, one line per step; `rebalancer history`, `git log
// --oneline` of the status branch, and the realized savings.
//
// Everything it starts — the control plane, the git server, the controller —
// stops when it returns, is interrupted, or is killed (the control plane's
// processes die with it); the temporary directory is removed.
//
//	go build -o bin/rebalancer ./cmd/rebalancer && go run ./hack/demo --bin bin/rebalancer
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/cloud/kwok"
	"github.com/rebalancer-dev/rebalancer/internal/localcluster"
)

const (
	// nodeGroup and nodeCount: the demo's node group of older, expensive nodes.
	nodeGroup  = "general"
	nodeCount  = 6
	oldOffer   = "std-4vcpu-8gb-v1"
	cluster    = "local"
	statusRef  = "rebalancer-status"
	groupLabel = "rebalancer.dev/node-group"
	// firstBuild is what the README says the first build of the control plane takes.
	firstBuild = "about 30 minutes on 2 cores (measured 1948 s)"
)

func main() {
	var o options
	flag.StringVar(&o.Bin, "bin", "bin/rebalancer", "the rebalancer binary to demonstrate")
	flag.StringVar(&o.Examples, "examples", "deploy/examples/demo", "directory holding catalog.yaml, workloads.yaml and rebalancer/policies")
	flag.BoolVar(&o.Keep, "keep", false, "keep the temporary directory (cluster logs, the git repository) for a look afterwards")
	flag.Parse()
	o.Out = os.Stdout
	o.Color = isTerminal(os.Stdout)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	_, err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// options configure one run of the demo.
type options struct {
	// Bin is the rebalancer binary; Examples the demo's policy, catalog and workloads.
	Bin, Examples string
	// Out receives everything a person would see.
	Out io.Writer
	// Color makes commands and headings bold.
	Color bool
	// Keep leaves the temporary directory behind.
	Keep bool
}

// result is what the demo did, for its test.
type result struct {
	Plan string
	// Status is the plan's final status, as committed to the status branch.
	Status *api.RebalanceStatus
	// Phases are the phases of the status commits, oldest first.
	Phases []api.Phase
	// NodesBefore and NodesAfter map node names to their offering.
	NodesBefore, NodesAfter map[string]string
	// Output of the commands that matter, as printed.
	Analyze, Propose, Controller, History string
	// Dir was the temporary directory (removed unless Keep).
	Dir string
	// Took is the demo's time, from the cluster's start to the end.
	Took time.Duration
}

// demo holds the state of one run.
type demo struct {
	o       options
	dir     string // the user's working directory: catalog.yaml, fleet/ (a clone)
	env     []string
	kubectl string
	bin     string
	repoURL string
}

func run(ctx context.Context, o options) (_ *result, err error) {
	d := &demo{o: o}
	if d.bin, err = filepath.Abs(o.Bin); err != nil {
		return nil, err
	}
	if _, err := os.Stat(d.bin); err != nil {
		return nil, fmt.Errorf("the rebalancer binary: %w (run `make build` first)", err)
	}
	if err := d.ensureControlPlane(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	tmp, err := os.MkdirTemp("", "rebalancer-demo-")
	if err != nil {
		return nil, fmt.Errorf("creating the demo's directory: %w", err)
	}
	res := &result{Dir: tmp}
	defer func() {
		if o.Keep {
			d.say("\nkept %s (cluster logs under cluster/logs, the repository under git/fleet.git)", tmp)
			return
		}
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = fmt.Errorf("removing %s: %w", tmp, rerr)
		}
	}()
	d.dir = filepath.Join(tmp, "work")
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return nil, err
	}

	d.heading("Setting up: a local Kubernetes control plane, 6 older nodes, workloads, a git remote")
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(tmp, "cluster")})
	if err != nil {
		return nil, fmt.Errorf("starting the local cluster: %w", err)
	}
	stopGitServer := func() {}
	defer func() {
		c.Stop()
		stopGitServer()
		if left := processesUnder(tmp); len(left) > 0 {
			d.say("\nWARNING: still running after the demo: %s", strings.Join(left, "; "))
			if err == nil {
				err = fmt.Errorf("processes left running: %s", strings.Join(left, "; "))
			}
			return
		}
		d.say("\nstopped the control plane, the git server and the controller: no process of the demo is left running")
	}()
	d.say("control plane up in %s (etcd, kube-apiserver, scheduler, controller-manager, KWOK for the nodes)", c.StartupTime.Round(100*time.Millisecond))
	d.kubectl = filepath.Join(localcluster.BinDir(), "kubectl")
	gitURL, stopGit, err := serveGit(filepath.Join(tmp, "git"))
	if err != nil {
		return nil, err
	}
	stopGitServer = stopGit
	d.repoURL = gitURL + "/fleet.git"
	d.env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig,
		// The clone cache of `rebalancer` commands lives and dies with the demo.
		"XDG_CACHE_HOME="+filepath.Join(tmp, "cache"),
		// The reviewer, with a git configuration of their own only.
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0", "HOME="+tmp,
		"GIT_AUTHOR_NAME=Riley Reviewer", "GIT_AUTHOR_EMAIL=riley@example.com",
		"GIT_COMMITTER_NAME=Riley Reviewer", "GIT_COMMITTER_EMAIL=riley@example.com",
		// git-http-backend behind CGI needs a Content-Length, not a chunked body.
		"GIT_CONFIG_COUNT=2", "GIT_CONFIG_KEY_0=http.postBuffer", "GIT_CONFIG_VALUE_0=104857600",
		"GIT_CONFIG_KEY_1=advice.detachedHead", "GIT_CONFIG_VALUE_1=false")

	catalog, err := kwok.LoadCatalog(filepath.Join(o.Examples, "catalog.yaml"))
	if err != nil {
		return nil, err
	}
	old := slices.IndexFunc(catalog, func(off cloud.Offering) bool { return off.Name == oldOffer })
	if old < 0 {
		return nil, fmt.Errorf("%s/catalog.yaml has no offering %s", o.Examples, oldOffer)
	}
	for i := range nodeCount {
		name := fmt.Sprintf("demo-v1-%d", i)
		n := kwok.NewNode(name, catalog[old], map[string]string{groupLabel: nodeGroup, "rebalancer.dev/enabled": "true"}, nil, false)
		if err := kwok.CreateNode(ctx, c.Client, n); err != nil {
			return nil, fmt.Errorf("creating node %s: %w", name, err)
		}
		if _, err := c.WaitNodeReady(ctx, name, 30*time.Second); err != nil {
			return nil, err
		}
	}
	for _, f := range []string{"catalog.yaml", "workloads.yaml"} {
		if err := copyFile(filepath.Join(o.Examples, f), filepath.Join(d.dir, f)); err != nil {
			return nil, err
		}
	}
	if err := d.seedRepo(ctx, filepath.Join(tmp, "git")); err != nil {
		return nil, err
	}
	d.say("git remote %s holds rebalancer/policies/general.yaml; the commands below run in %s", d.repoURL, d.dir)

	if _, err := d.sh(ctx, "kubectl", "apply", "-f", "workloads.yaml"); err != nil {
		return nil, err
	}
	if _, err := d.sh(ctx, "kubectl", "create", "namespace", "rebalancer-system"); err != nil {
		return nil, err
	}
	if err := waitPodsReady(ctx, c, "shop", 11); err != nil {
		return nil, err
	}
	if _, err := d.sh(ctx, "kubectl", "get", "nodes", "-L", groupLabel+",node.kubernetes.io/instance-type"); err != nil {
		return nil, err
	}
	if _, err := d.sh(ctx, "kubectl", "get", "pods", "-n", "shop", "-o", "wide", "--sort-by", "{.spec.nodeName}"); err != nil {
		return nil, err
	}
	if res.NodesBefore, err = nodeOfferings(ctx, c); err != nil {
		return nil, err
	}

	d.heading("1. Which nodes could be cheaper, and why the others are left alone")
	if res.Analyze, err = d.sh(ctx, "rebalancer", "analyze", "--repo-dir", "fleet", "--catalog", "catalog.yaml", "-o", "table"); err != nil {
		return nil, err
	}

	d.heading("2. Propose: the plan goes to a branch (plain git; with GitHub it is a pull request)")
	if res.Propose, err = d.sh(ctx, "rebalancer", "propose", "--repo", d.repoURL, "--forge", "git", "--catalog", "catalog.yaml"); err != nil {
		return nil, err
	}
	m := regexp.MustCompile(`plan (\S+)`).FindStringSubmatch(res.Propose)
	if m == nil {
		return nil, fmt.Errorf("propose opened no proposal:\n%s", res.Propose)
	}
	res.Plan = m[1]
	branch := "origin/rebalancer/" + cluster + "/" + nodeGroup

	d.heading("3. Review: what the reviewer sees, then the merge")
	for _, args := range [][]string{
		{"-C", "fleet", "fetch", "-q", "origin"},
		{"-C", "fleet", "branch", "-r"},
		{"-C", "fleet", "log", "-1", "--format=%an <%ae>%n%n%B", branch},
		{"-C", "fleet", "diff", "--stat", "main", branch},
		{"-C", "fleet", "diff", "main", branch},
		{"-C", "fleet", "merge", "--no-ff", "-q", "-m", "Merge plan " + res.Plan + " (reviewed)", branch},
		{"-C", "fleet", "push", "-q", "origin", "main"},
	} {
		if _, err := d.sh(ctx, "git", args...); err != nil {
			return nil, err
		}
	}

	d.heading("4. The controller runs the merged plan: rolling, one node at a time, one line per step")
	if res.Controller, err = d.sh(ctx, "rebalancer", "controller", "--once", "--log-format", "progress",
		"--repo", d.repoURL, "--status-branch", statusRef, "--catalog", "catalog.yaml"); err != nil {
		return nil, err
	}

	d.heading("5. The audit trail: every status change is a commit")
	if res.History, err = d.sh(ctx, "rebalancer", "history", "--repo", d.repoURL, "--status-branch", statusRef); err != nil {
		return nil, err
	}
	if _, err := d.sh(ctx, "git", "-C", "fleet", "fetch", "-q", "origin"); err != nil {
		return nil, err
	}
	if _, err := d.sh(ctx, "git", "-C", "fleet", "log", "--oneline", "origin/"+statusRef); err != nil {
		return nil, err
	}
	if _, err := d.sh(ctx, "rebalancer", "status", res.Plan, "--repo", d.repoURL, "--status-branch", statusRef); err != nil {
		return nil, err
	}
	if _, err := d.sh(ctx, "kubectl", "get", "nodes", "-L", groupLabel+",node.kubernetes.io/instance-type"); err != nil {
		return nil, err
	}

	if res.Status, res.Phases, err = d.readStatus(ctx, res.Plan); err != nil {
		return nil, err
	}
	if res.NodesAfter, err = nodeOfferings(ctx, c); err != nil {
		return nil, err
	}
	res.Took = time.Since(start)
	d.heading(fmt.Sprintf("Plan %s: %s. %d of %d nodes replaced; realized savings %.2f per month. The demo took %s.",
		res.Plan, res.Status.Status.Phase, len(res.Status.Status.ProvisionedNodes), nodeCount,
		res.Status.Status.RealizedMonthlySavings, res.Took.Round(time.Second)))
	return res, nil
}

// ensureControlPlane builds the control plane's binaries the first time, saying
// how long that takes before it starts.
func (d *demo) ensureControlPlane(ctx context.Context) error {
	dir := localcluster.BinDir()
	var missing []string
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	d.heading("First run on this machine: building the local control plane")
	d.say("%s are missing from %s.\nThey are built from the Go module proxy once per machine: %s.\nLater runs of `make demo` start in seconds.",
		strings.Join(missing, ", "), dir, firstBuild)
	began := time.Now()
	if _, err := localcluster.EnsureBinaries(ctx); err != nil {
		return err
	}
	d.say("built in %s", time.Since(began).Round(time.Second))
	return nil
}

// seedRepo creates the bare repository on the server and pushes the policy to main
// from the user's clone, fleet/.
func (d *demo) seedRepo(ctx context.Context, root string) error {
	bare := filepath.Join(root, "fleet.git")
	for _, args := range [][]string{
		{"init", "--bare", "-q", "-b", "main", bare},
		{"-C", bare, "config", "http.receivepack", "true"},
		{"clone", "-q", d.repoURL, "fleet"},
		{"-C", "fleet", "symbolic-ref", "HEAD", "refs/heads/main"},
	} {
		if _, err := d.quiet(ctx, "git", args...); err != nil {
			return err
		}
	}
	policyDir := filepath.Join(d.dir, "fleet", "rebalancer", "policies")
	if err := os.MkdirAll(policyDir, 0o755); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(d.o.Examples, "rebalancer", "policies", "general.yaml"), filepath.Join(policyDir, "general.yaml")); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-C", "fleet", "add", "rebalancer"},
		{"-C", "fleet", "commit", "-q", "-m", "rebalancer: policy for node group general"},
		{"-C", "fleet", "push", "-q", "origin", "main"},
	} {
		if _, err := d.quiet(ctx, "git", args...); err != nil {
			return err
		}
	}
	_, err := d.sh(ctx, "cat", "fleet/rebalancer/policies/general.yaml")
	return err
}

// readStatus reads the plan's final status and the phases of its status commits
// from the status branch, with the git command line.
func (d *demo) readStatus(ctx context.Context, plan string) (*api.RebalanceStatus, []api.Phase, error) {
	file := "rebalancer/status/" + plan + ".yaml"
	out, err := d.quiet(ctx, "git", "-C", "fleet", "show", "origin/"+statusRef+":"+file)
	if err != nil {
		return nil, nil, err
	}
	st, err := api.DecodeStatus(plan+".yaml", []byte(out))
	if err != nil {
		return nil, nil, fmt.Errorf("the status of %s: %w", plan, err)
	}
	log, err := d.quiet(ctx, "git", "-C", "fleet", "log", "--reverse", "--format=%(trailers:key=Rebalancer-Phase,valueonly)", "origin/"+statusRef)
	if err != nil {
		return nil, nil, err
	}
	var phases []api.Phase
	for _, l := range strings.Split(log, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			phases = append(phases, api.Phase(l))
		}
	}
	return st, phases, nil
}

// sh shows a command as a user would type it, runs it in the working directory
// and returns its standard output (also shown).
func (d *demo) sh(ctx context.Context, name string, args ...string) (string, error) {
	d.say("\n%s", d.bold("$ "+displayCommand(name, args)))
	return d.exec(ctx, true, name, args...)
}

// quiet runs a command of the demo's own plumbing without showing it.
func (d *demo) quiet(ctx context.Context, name string, args ...string) (string, error) {
	return d.exec(ctx, false, name, args...)
}

func (d *demo) exec(ctx context.Context, show bool, name string, args ...string) (string, error) {
	path := name
	switch name {
	case "rebalancer":
		path = d.bin
	case "kubectl":
		path = d.kubectl
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir, cmd.Env = d.dir, d.env
	// Interrupted, a command (the controller) gets SIGINT and time to stop cleanly.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	// Killed with the demo, even by SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if show {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&stdout, d.o.Out), io.MultiWriter(&stderr, d.o.Out)
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return stdout.String(), fmt.Errorf("interrupted during %s: %w", displayCommand(name, args), ctx.Err())
		}
		return stdout.String(), fmt.Errorf("%s: %w\n%s", displayCommand(name, args), err, stderr.String())
	}
	return stdout.String(), nil
}

func (d *demo) heading(s string) { d.say("\n%s", d.bold("== "+s)) }

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.o.Out, format+"\n", args...) }

func (d *demo) bold(s string) string {
	if d.o.Color {
		return "\033[1m" + s + "\033[0m"
	}
	return s
}

// displayCommand quotes what a shell would need quoted.
func displayCommand(name string, args []string) string {
	parts := []string{name}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"$&|;<>(){}*?#%!") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// serveGit serves the bare repositories under root with git's own smart-HTTP
// backend on a loopback port, anonymous, pushes allowed.
func serveGit(root string) (string, func(), error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", nil, err
	}
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return "", nil, fmt.Errorf("git --exec-path: %w (is git installed?)", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1",
		"GIT_CONFIG_NOSYSTEM=1", "HOME=" + root}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listening for the git server: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// waitPodsReady waits until namespace holds want Ready pods.
func waitPodsReady(ctx context.Context, c *localcluster.Cluster, namespace string, want int) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready := 0
		var waiting []string
		for _, p := range pods.Items {
			if podReady(&p) {
				ready++
			} else {
				waiting = append(waiting, p.Name+" ("+string(p.Status.Phase)+")")
			}
		}
		last = fmt.Sprintf("%d of %d pods Ready; waiting for %s", ready, want, strings.Join(waiting, ", "))
		return ready >= want && len(waiting) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the workloads: %s: %w", last, err)
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func nodeOfferings(ctx context.Context, c *localcluster.Cluster) (map[string]string, error) {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: groupLabel + "=" + nodeGroup})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	out := map[string]string{}
	for _, n := range nodes.Items {
		out[n.Name] = n.Labels["node.kubernetes.io/instance-type"]
	}
	return out, nil
}

// processesUnder lists the processes whose command line names dir (the cluster's
// components, a controller): none should outlive the demo. It reads /proc.
func processesUnder(dir string) []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := fmt.Sprint(os.Getpid())
	var out []string
	for _, e := range entries {
		if e.Name() == self || strings.Trim(e.Name(), "0123456789") != "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(dir)) {
			continue
		}
		out = append(out, e.Name()+" "+strings.ReplaceAll(string(bytes.TrimRight(b, "\x00")), "\x00", " "))
	}
	return out
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
