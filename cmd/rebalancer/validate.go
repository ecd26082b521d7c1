package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

func newValidateCommand() *cobra.Command {
	var output, root string
	cmd := &cobra.Command{
		Use:   "validate [PATH...]",
		Short: "Check policy, plan and status files strictly; meant as the required check on plan PRs",
		Long: `validate checks rebalancer files and prints every problem as
file:line: field.path: message.

Each PATH is a file or a directory. A directory is a GitOps repository root: the
files under <dir>/rebalancer/{policies,plans,status} are checked (--path changes
"rebalancer"), and plans are checked against the policies beside them. Without a
PATH the current directory is checked.

Exit status: 0 when everything is valid, 1 when anything is invalid, 2 for usage
errors such as a PATH that does not exist.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return usageError("--output %q: use text or json", output)
			}
			if len(args) == 0 {
				args = []string{"."}
			}
			var files []repoFile
			for _, a := range args {
				fs, err := collect(a, root)
				if err != nil {
					return err
				}
				files = append(files, fs...)
			}
			errs, counts := validateFiles(files)
			out := cmd.OutOrStdout()
			if output == "json" {
				if errs == nil {
					errs = api.ErrorList{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(errs); err != nil {
					return err
				}
			} else {
				for _, e := range errs {
					fmt.Fprintln(out, e.Error())
				}
				if len(errs) == 0 {
					fmt.Fprintf(out, "ok: %d files valid (%d policies, %d plans, %d statuses)\n",
						len(files), counts[api.KindPolicy], counts[api.KindPlan], counts[api.KindStatus])
				} else {
					fmt.Fprintf(cmd.ErrOrStderr(), "%d problems in %d files checked\n", len(errs), len(files))
				}
			}
			if len(errs) > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().StringVar(&root, "path", "rebalancer", "directory of the rebalancer files inside a repository")
	return cmd
}

// repoFile is a file to check and the kind its location implies ("" when given directly).
type repoFile struct {
	path string
	kind string
}

var kindDirs = []struct{ dir, kind string }{
	{"policies", api.KindPolicy}, {"plans", api.KindPlan}, {"status", api.KindStatus},
}

func collect(arg, rootPath string) ([]repoFile, error) {
	info, err := os.Stat(arg)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, usageError("%s: no such file or directory", arg)
		}
		return nil, usageError("%s: %v", arg, err)
	}
	if !info.IsDir() {
		return []repoFile{{path: arg}}, nil
	}
	root := filepath.Join(arg, rootPath)
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		// The directory may itself be the rebalancer root.
		if !hasKindDir(arg) {
			return nil, usageError("%s: no %s/ directory with policies/, plans/ or status/ in it (set --path to where they live)", arg, rootPath)
		}
		root = arg
	}
	var files []repoFile
	for _, kd := range kindDirs {
		entries, err := os.ReadDir(filepath.Join(root, kd.dir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, usageError("reading %s: %v", filepath.Join(root, kd.dir), err)
		}
		for _, e := range entries {
			if e.IsDir() || !(strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
				continue
			}
			files = append(files, repoFile{path: filepath.Join(root, kd.dir, e.Name()), kind: kd.kind})
		}
	}
	return files, nil
}

func hasKindDir(dir string) bool {
	for _, kd := range kindDirs {
		if st, err := os.Stat(filepath.Join(dir, kd.dir)); err == nil && st.IsDir() {
			return true
		}
	}
	return false
}

// validateFiles checks each file alone, then what files say about each other:
// policy names are unique and every plan names a policy that exists beside it.
func validateFiles(files []repoFile) (api.ErrorList, map[string]int) {
	var errs api.ErrorList
	counts := map[string]int{}
	policies := map[string]string{} // root + "\x00" + name → file
	var plans []*api.Document
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			errs = append(errs, api.FileError{File: f.path, Message: "cannot read: " + err.Error()})
			continue
		}
		doc, ferrs := api.Decode(f.path, data, f.kind)
		errs = append(errs, ferrs...)
		switch o := doc.Object.(type) {
		case *api.RebalancePolicy:
			counts[api.KindPolicy]++
			key := filepath.Dir(filepath.Dir(f.path)) + "\x00" + o.Metadata.Name
			if first, dup := policies[key]; dup && o.Metadata.Name != "" {
				errs = append(errs, api.FileError{File: f.path, Line: doc.Line("metadata.name"), Field: "metadata.name",
					Message: fmt.Sprintf("Duplicate value: %q: also the name of the policy in %s", o.Metadata.Name, first)})
			} else {
				policies[key] = f.path
			}
		case *api.RebalancePlan:
			counts[api.KindPlan]++
			if f.kind != "" {
				plans = append(plans, doc)
			}
		case *api.RebalanceStatus:
			counts[api.KindStatus]++
		}
	}
	for _, doc := range plans {
		plan := doc.Object.(*api.RebalancePlan)
		root := filepath.Dir(filepath.Dir(doc.File))
		if plan.Spec.Policy == "" || !hasDir(filepath.Join(root, "policies")) {
			continue
		}
		if _, ok := policies[root+"\x00"+plan.Spec.Policy]; !ok {
			errs = append(errs, api.FileError{File: doc.File, Line: doc.Line("spec.policy"), Field: "spec.policy",
				Message: fmt.Sprintf("Not found: %q: no policy of that name in %s", plan.Spec.Policy, filepath.Join(root, "policies"))})
		}
	}
	sort.SliceStable(errs, func(i, j int) bool {
		if errs[i].File != errs[j].File {
			return errs[i].File < errs[j].File
		}
		return errs[i].Line < errs[j].Line
	})
	return errs, counts
}

func hasDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
