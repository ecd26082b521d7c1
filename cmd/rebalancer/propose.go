package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/gitops"
	"github.com/rebalancer-dev/rebalancer/gitops/forge"
	"github.com/rebalancer-dev/rebalancer/gitops/propose"
	"github.com/rebalancer-dev/rebalancer/planner"
	"github.com/rebalancer-dev/rebalancer/policies"
)

// repoFlags are the flags of every command that works on the GitOps repository
// through git.
type repoFlags struct {
	url, branch, statusBranch, root, cacheDir  string
	tokenFile, username, sshKeyFile, knownHost string
	authorName, authorEmail                    string
	signingKeyFile, signingFormat              string
	timeout                                    time.Duration
	// GitHub App: its installation token serves git over HTTPS and the API.
	appID, appInstallation int64
	appKeyFile, githubURL  string
	githubRepo             string
}

func (f *repoFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.url, "repo", "", "URL of the GitOps repository (https://..., ssh://... or git@host:org/repo.git)")
	fl.StringVar(&f.branch, "branch", "main", "the watched branch: policies and merged plans")
	fl.StringVar(&f.statusBranch, "status-branch", "", "branch status commits go to (default: the watched branch)")
	fl.StringVar(&f.root, "path", gitops.DefaultRoot, "directory of the rebalancer files inside the repository")
	cacheDefault := ""
	if d, err := os.UserCacheDir(); err == nil {
		cacheDefault = filepath.Join(d, "rebalancer", "git")
	}
	fl.StringVar(&f.cacheDir, "cache-dir", cacheDefault, `where the clone is kept between runs ("" keeps it in memory)`)
	fl.StringVar(&f.tokenFile, "git-token-file", "", "file holding an HTTPS token for git (default: $REBALANCER_GIT_TOKEN)")
	fl.StringVar(&f.username, "git-username", "", "user name sent with the token (default x-access-token)")
	fl.StringVar(&f.sshKeyFile, "ssh-key-file", "", "SSH private key for an ssh remote")
	fl.StringVar(&f.knownHost, "known-hosts", "", "known_hosts file the SSH server's host key is checked against (required with --ssh-key-file)")
	fl.StringVar(&f.authorName, "author-name", "rebalancer[bot]", "name of the bot identity of every commit")
	fl.StringVar(&f.authorEmail, "author-email", "rebalancer@users.noreply.github.com", "email of the bot identity")
	fl.StringVar(&f.signingKeyFile, "signing-key-file", "", "sign commits with this private key (PGP armored or SSH)")
	fl.StringVar(&f.signingFormat, "signing-format", "ssh", "format of --signing-key-file: ssh or pgp")
	fl.DurationVar(&f.timeout, "git-timeout", 60*time.Second, "deadline of each fetch and push")
	fl.Int64Var(&f.appID, "github-app-id", 0, "GitHub App ID (with --github-app-installation-id and --github-app-key-file)")
	fl.Int64Var(&f.appInstallation, "github-app-installation-id", 0, "installation ID of the GitHub App on the repository's owner")
	fl.StringVar(&f.appKeyFile, "github-app-key-file", "", "PEM private key of the GitHub App")
	fl.StringVar(&f.githubRepo, "github-repo", "", "owner/name of the repository on GitHub (default: from --repo)")
	fl.StringVar(&f.githubURL, "github-url", "", "REST API base of GitHub Enterprise Server, such as https://ghe.example.com/api/v3/ (default github.com)")
}

// secret reads a secret from a file, else from an environment variable; it is
// never printed.
func secret(file, env string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usageError("reading %s: %v", file, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return strings.TrimSpace(os.Getenv(env)), nil
}

// appSource is the GitHub App token source, when the App flags are given.
func (f *repoFlags) appSource() (*forge.AppTokenSource, error) {
	if f.appID == 0 && f.appInstallation == 0 && f.appKeyFile == "" {
		return nil, nil
	}
	if f.appID == 0 || f.appInstallation == 0 || f.appKeyFile == "" {
		return nil, usageError("a GitHub App needs --github-app-id, --github-app-installation-id and --github-app-key-file")
	}
	key, err := os.ReadFile(f.appKeyFile)
	if err != nil {
		return nil, usageError("reading %s: %v", f.appKeyFile, err)
	}
	src, err := forge.NewAppTokenSource(f.appID, f.appInstallation, key, f.githubURL)
	if err != nil {
		return nil, usageError("%v", err)
	}
	return src, nil
}

func (f *repoFlags) open(ctx context.Context, app *forge.AppTokenSource, log *slog.Logger) (*gitops.Repo, error) {
	if f.url == "" {
		return nil, usageError("--repo URL is required")
	}
	o := gitops.Options{URL: f.url, CacheDir: f.cacheDir, Author: gitops.Identity{Name: f.authorName, Email: f.authorEmail},
		Timeout: f.timeout, Logger: log}
	switch {
	case app != nil:
		o.Auth = app
	case f.sshKeyFile != "":
		key, err := os.ReadFile(f.sshKeyFile)
		if err != nil {
			return nil, usageError("reading %s: %v", f.sshKeyFile, err)
		}
		pass, _ := secret("", "REBALANCER_SSH_KEY_PASSPHRASE")
		if o.Auth, err = gitops.SSHKeyAuth("", key, pass, f.knownHost); err != nil {
			return nil, usageError("%v", err)
		}
	default:
		tok, err := secret(f.tokenFile, "REBALANCER_GIT_TOKEN")
		if err != nil {
			return nil, err
		}
		if tok != "" {
			o.Auth = gitops.TokenAuth(f.username, tok)
		}
	}
	if f.signingKeyFile != "" {
		key, err := os.ReadFile(f.signingKeyFile)
		if err != nil {
			return nil, usageError("reading %s: %v", f.signingKeyFile, err)
		}
		pass, _ := secret("", "REBALANCER_SIGNING_KEY_PASSPHRASE")
		switch f.signingFormat {
		case "ssh":
			o.Signer, err = gitops.NewSSHSigner(key, []byte(pass))
		case "pgp":
			o.Signer, err = gitops.NewPGPSigner(key, []byte(pass))
		default:
			return nil, usageError("--signing-format %q: use ssh or pgp", f.signingFormat)
		}
		if err != nil {
			return nil, usageError("%v", err)
		}
	}
	repo, err := gitops.Open(ctx, o)
	if err != nil {
		return nil, &exitError{code: 1, err: err}
	}
	return repo, nil
}

func newProposeCommand() *cobra.Command {
	var kf kubeFlags
	var pf providerFlags
	var rf repoFlags
	var clusterName, forgeName, ghTokenFile string
	var maxNodes int
	cmd := &cobra.Command{
		Use:   "propose",
		Short: "Run the analyzer and keep one pull request per node group in step with its plan (one-shot, for a CronJob)",
		Long: `propose reads the policies on the watched branch, the cluster and the provider's
offerings, runs the analyzer, and keeps at most one open proposal per cluster and node
group, on branch rebalancer/<cluster>/<group>, adding exactly one file: the plan.

  unchanged contentDigest   nothing is pushed and the forge is not written to
  changed candidates        a new plan ID in a new pull request; the old one is closed with a link
  no candidates any more    the pull request is closed with a comment saying why
  a policy that fails       its node group gets no proposal (its open one is left alone), the
  validation                error names the file, other groups go on; exit status 1

Secrets come from files or the environment: --git-token-file or $REBALANCER_GIT_TOKEN,
--github-token-file or $GITHUB_TOKEN (default: the git token), --github-app-key-file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			if msgs := validation.IsDNS1123Label(clusterName); len(msgs) > 0 {
				return usageError("--cluster-name %q: %s", clusterName, strings.Join(msgs, "; "))
			}
			app, err := rf.appSource()
			if err != nil {
				return err
			}
			repo, err := rf.open(ctx, app, log)
			if err != nil {
				return err
			}
			f, err := buildForge(forgeName, rf, app, ghTokenFile, repo, log)
			if err != nil {
				return err
			}
			return runPropose(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), proposeInput{repo: repo, forge: f, rf: rf, kf: kf, pf: pf,
				cluster: clusterName, maxNodes: maxNodes, log: log})
		},
	}
	kf.register(cmd)
	pf.register(cmd)
	rf.register(cmd)
	cmd.Flags().StringVar(&clusterName, "cluster-name", "local", "this cluster's name: in plan IDs, branches and labels")
	cmd.Flags().IntVar(&maxNodes, "max-nodes-per-plan", 0, "hard limit on candidates per plan (0: the policy's)")
	cmd.Flags().StringVar(&forgeName, "forge", "", "where proposals go: github (pull requests) or git (branches only); default github for github.com URLs")
	cmd.Flags().StringVar(&ghTokenFile, "github-token-file", "", "file holding a GitHub token for the API (default: $GITHUB_TOKEN, then the git token)")
	return cmd
}

// buildForge returns where proposals go: "github" (pull requests), "git"
// (branches only), or "" to choose github for github.com URLs.
func buildForge(name string, rf repoFlags, app *forge.AppTokenSource, ghTokenFile string, repo *gitops.Repo, log *slog.Logger) (forge.Forge, error) {
	if name == "" {
		name = "git"
		if strings.Contains(rf.url, "github.com") || rf.githubURL != "" {
			name = "github"
		}
	}
	switch name {
	case "github":
		return githubForge(rf, app, ghTokenFile, repo, log)
	case "git":
		return forge.NewGit(repo, rf.branch, log), nil
	}
	return nil, usageError("--forge %q: use git or github", name)
}

func githubForge(rf repoFlags, app *forge.AppTokenSource, tokenFile string, repo *gitops.Repo, log *slog.Logger) (forge.Forge, error) {
	owner, name, err := forge.ParseRepoURL(rf.url)
	if rf.githubRepo != "" {
		var ok bool
		owner, name, ok = strings.Cut(rf.githubRepo, "/")
		if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
			return nil, usageError("--github-repo %q: use owner/name", rf.githubRepo)
		}
	} else if err != nil {
		return nil, usageError("--repo: %v (set --github-repo owner/name)", err)
	}
	o := forge.GitHubOptions{APIURL: rf.githubURL, Owner: owner, Repo: name, Base: rf.branch, Git: repo, Logger: log}
	if app != nil {
		o.Transport = app.Transport()
	} else {
		tok, err := secret(tokenFile, "GITHUB_TOKEN")
		if err != nil {
			return nil, err
		}
		if tok == "" {
			if tok, err = secret(rf.tokenFile, "REBALANCER_GIT_TOKEN"); err != nil {
				return nil, err
			}
		}
		if tok == "" {
			return nil, usageError("--forge github needs a token (--github-token-file, $GITHUB_TOKEN or the git token) or a GitHub App")
		}
		o.Transport = forge.TokenTransport(tok)
	}
	gh, err := forge.NewGitHub(o)
	if err != nil {
		return nil, usageError("%v", err)
	}
	return gh, nil
}

type proposeInput struct {
	repo     *gitops.Repo
	forge    forge.Forge
	rf       repoFlags
	kf       kubeFlags
	pf       providerFlags
	cluster  string
	maxNodes int
	log      *slog.Logger
	// onAnalysis, when set, sees every analysis (the controller's blocked-nodes metric).
	onAnalysis func(*planner.Analysis)
}

func runPropose(ctx context.Context, stdout, stderr io.Writer, in proposeInput) error {
	layout := gitops.Layout{Root: in.rf.root}
	base, err := in.repo.Head(in.rf.branch)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	tree, err := in.repo.TreeFS(base)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	pols, broken, policyErrs := loadPoliciesLeniently(tree, layout.PoliciesDir())
	ps, err := policies.NewPolicies(pols)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	statusBranch := in.rf.statusBranch
	if statusBranch == "" {
		statusBranch = in.rf.branch
	}
	store := gitops.NewStatusStore(in.repo, gitops.StoreOptions{Layout: layout, WatchedBranch: in.rf.branch, StatusBranch: statusBranch})
	ix, err := store.Plans(ctx)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("plans and statuses: %w", err)}
	}
	client, host, err := in.kf.client()
	if err != nil {
		return err
	}
	provider, err := in.pf.build(client)
	if err != nil {
		return err
	}
	a, err := analyze(ctx, client, host, provider, ps, historyFromIndex(ix, in.cluster), in.cluster, in.maxNodes)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if in.onAnalysis != nil {
		in.onAnalysis(a)
	}
	groups := proposalGroups(a, ix, in.cluster, layout, statusBranch)
	p := propose.New(propose.Options{Repo: in.repo, Forge: in.forge, Layout: layout, Base: in.rf.branch, Cluster: in.cluster, Logger: in.log})
	results := p.Sync(ctx, groups, broken)

	failed := len(policyErrs) > 0
	for _, e := range policyErrs {
		fmt.Fprintln(stderr, "error:", e)
	}
	for _, r := range results {
		if r.Err != nil {
			failed = true
			fmt.Fprintf(stderr, "error: %v\n", r.Err)
			continue
		}
		line := fmt.Sprintf("%s/%s: %s", r.Cluster, r.NodeGroup, r.Action)
		if r.Proposal != nil {
			line += " " + r.Proposal.Ref()
			if r.Proposal.URL != "" {
				line += " " + r.Proposal.URL
			}
		}
		if r.PlanID != "" {
			line += " plan " + r.PlanID
		}
		if r.Previous != nil {
			line += " (closed " + r.Previous.Ref() + ")"
		}
		fmt.Fprintln(stdout, line)
	}
	if len(results) == 0 {
		fmt.Fprintln(stdout, "no node group has candidates or an open proposal")
	}
	if failed {
		return &exitError{code: 1}
	}
	return nil
}

// loadPoliciesLeniently reads every policy file on its own: one that fails
// validation is reported (its errors name the file) and left out, with the name it
// claims, so its node groups get no proposal while the others go on.
func loadPoliciesLeniently(fsys fs.FS, dir string) ([]*api.RebalancePolicy, map[string]bool, []error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, nil, []error{fmt.Errorf("reading %s: %w", dir, err)}
	}
	var out []*api.RebalancePolicy
	broken := map[string]bool{}
	var errs []error
	seen := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || gitops.IDFromFile(name) == "" {
			continue
		}
		file := path.Join(dir, name)
		data, err := fs.ReadFile(fsys, file)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading %s: %w", file, err))
			continue
		}
		p, err := api.DecodePolicy(file, data)
		if err != nil {
			broken[gitops.IDFromFile(name)] = true
			if doc, _ := api.Decode(file, data, api.KindPolicy); doc != nil {
				if bp, ok := doc.Object.(*api.RebalancePolicy); ok && bp != nil && bp.Metadata.Name != "" {
					broken[bp.Metadata.Name] = true
				}
			}
			errs = append(errs, fmt.Errorf("policy %s does not validate, so its node groups get no proposal:\n%w", file, err))
			continue
		}
		if first, dup := seen[p.Metadata.Name]; dup {
			broken[p.Metadata.Name] = true
			errs = append(errs, fmt.Errorf("%s: metadata.name: Duplicate value: %q: also the name of the policy in %s", file, p.Metadata.Name, first))
			continue
		}
		seen[p.Metadata.Name] = file
		out = append(out, p)
	}
	kept := out[:0]
	for _, p := range out {
		if !broken[p.Metadata.Name] {
			kept = append(kept, p)
		}
	}
	return kept, broken, errs
}

// historyFromIndex is what the analyzer must know of earlier plans of this
// cluster: nodes of merged plans without a terminal status are pending; a finished
// plan that changed something starts its group's cooldown. Open proposals are not
// pending here: propose derives them again and compares.
func historyFromIndex(ix *gitops.PlanIndex, cluster string) planner.History {
	h := planner.History{PendingNodes: map[string]string{}, LastFinished: map[string]time.Time{}}
	for _, rec := range ix.Plans {
		if rec.Plan == nil || rec.Plan.Spec.Cluster != cluster {
			continue
		}
		if !rec.Finished() {
			for _, c := range rec.Plan.Spec.Candidates {
				h.PendingNodes[c.Node] = rec.ID
			}
			continue
		}
		if planner.ChangedSomething(rec.Status) {
			k := planner.GroupKey(rec.Plan.Spec.Policy, rec.Plan.Spec.NodeGroup)
			if rec.Status.Status.FinishedAt.After(h.LastFinished[k]) {
				h.LastFinished[k] = rec.Status.Status.FinishedAt.Time
			}
		}
	}
	return h
}

// proposalGroups turns the analysis into what each node group should have: its
// plan (marked as a retry when the group's last plan did not succeed), or the
// reasons it has none, and how many nodes were left out and why.
func proposalGroups(a *planner.Analysis, ix *gitops.PlanIndex, cluster string, layout gitops.Layout, statusBranch string) []propose.Group {
	type key struct{ policy, group string }
	groups := map[key]*propose.Group{}
	get := func(policy, group string) *propose.Group {
		k := key{policy, group}
		if groups[k] == nil {
			groups[k] = &propose.Group{Cluster: cluster, Policy: policy, NodeGroup: group, LeftOut: map[string]int{}}
		}
		return groups[k]
	}
	for _, p := range a.Plans {
		get(p.Spec.Policy, p.Spec.NodeGroup).Plan = p
	}
	for _, n := range a.Nodes {
		if n.Policy == "" || n.Group == "" {
			continue
		}
		g := get(n.Policy, n.Group)
		inPlan := false
		if g.Plan != nil {
			for _, c := range g.Plan.Spec.Candidates {
				inPlan = inPlan || c.Node == n.Node
			}
		}
		switch {
		case inPlan:
		case n.Reason == policies.ReasonCandidate:
			g.LeftOut["over-max-nodes-per-plan"]++
		default:
			g.LeftOut[string(n.Reason)]++
		}
	}
	// The last finished plan of each group: a new plan after one that did not
	// succeed is a retry and links the earlier status.
	last := map[key]*gitops.PlanRecord{}
	for _, rec := range ix.Plans {
		if rec.Plan != nil && rec.Plan.Spec.Cluster == cluster && rec.Finished() {
			last[key{rec.Plan.Spec.Policy, rec.Plan.Spec.NodeGroup}] = rec // ix.Plans is oldest first
		}
	}
	out := make([]propose.Group, 0, len(groups))
	for k, g := range groups {
		if g.Plan == nil {
			g.Why = "no node of node group " + g.NodeGroup + " is a candidate now (" + reasonCounts(g.LeftOut) + ")"
		} else if rec := last[k]; rec != nil && rec.Status.Status.Phase != api.PhaseSucceeded {
			g.Plan.Spec.RetryOf = rec.ID
			g.Retry = &propose.Earlier{ID: rec.ID, Phase: rec.Status.Status.Phase, StatusFile: layout.StatusFile(rec.ID), StatusBranch: statusBranch}
		}
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeGroup < out[j].NodeGroup })
	return out
}

func reasonCounts(m map[string]int) string {
	if len(m) == 0 {
		return "no nodes"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
