// vcsim-lite: a vCenter simulator (govmomi's simulator.VPX model) for the vSphere connector tests.
//
// It prints one line "VCSIM_URL=<url>" on stdout once it listens, then serves until SIGINT/SIGTERM.
// VMs get deterministic guest IPs (10.<nic>.<n/240>.<10+n%240>, n in name order) so tests can assert
// on them; uplink port groups are marked as vCenter marks them. Moving a VM to another host is done
// through the API (RelocateVM_Task), as against a real vCenter.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address (host:port, port 0 = any free port)")
	datacenters := flag.Int("dc", 1, "datacenters")
	hosts := flag.Int("standalone-host", 1, "standalone hosts per datacenter")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	clusterHosts := flag.Int("host", 3, "hosts per cluster")
	vms := flag.Int("vm", 2, "VMs per standalone host and per cluster resource pool")
	portgroups := flag.Int("pg", 1, "distributed port groups per datacenter")
	vlanBase := flag.Int("vlan", 100, "VLAN id of the first distributed port group (then +1 each); 0 = leave untagged")
	user := flag.String("username", "user", "login user name")
	pass := flag.String("password", "pass", "login password")
	plain := flag.Bool("http", false, "serve plain http instead of https")
	flag.Parse()

	model := simulator.VPX()
	model.Datacenter = *datacenters
	model.Host = *hosts
	model.Cluster = *clusters
	model.ClusterHost = *clusterHosts
	model.Machine = *vms
	model.Portgroup = *portgroups
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim: create:", err)
		os.Exit(1)
	}
	defer model.Remove()

	var machines []*simulator.VirtualMachine
	for _, e := range simulator.Map.All("VirtualMachine") {
		machines = append(machines, e.(*simulator.VirtualMachine))
	}
	sort.Slice(machines, func(i, j int) bool { return machines[i].Name < machines[j].Name })
	for i, vm := range machines {
		for j := range vm.Guest.Net {
			vm.Guest.Net[j].IpAddress = []string{fmt.Sprintf("10.%d.%d.%d", j, i/240, 10+i%240)}
		}
		if len(vm.Guest.Net) > 0 {
			vm.Guest.IpAddress = vm.Guest.Net[0].IpAddress[0]
			vm.Summary.Guest.IpAddress = vm.Guest.IpAddress
		}
	}

	{
		var pgs []*simulator.DistributedVirtualPortgroup
		for _, e := range simulator.Map.All("DistributedVirtualPortgroup") {
			pgs = append(pgs, e.(*simulator.DistributedVirtualPortgroup))
		}
		sort.Slice(pgs, func(i, j int) bool { return pgs[i].Name < pgs[j].Name })
		n := 0
		for _, pg := range pgs {
			if strings.Contains(pg.Name, "-DVUplinks") {
				// vCenter marks a switch's uplink port group; vcsim 0.24 does not.
				pg.Config.Uplink = types.NewBool(true)
				continue
			}
			setting, ok := pg.Config.DefaultPortConfig.(*types.VMwareDVSPortSetting)
			if !ok {
				continue
			}
			if spec, ok := setting.Vlan.(*types.VmwareDistributedVirtualSwitchVlanIdSpec); ok && *vlanBase > 0 {
				spec.VlanId = int32(*vlanBase + n)
				n++
			}
		}
	}

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	if !*plain {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()
	defer server.Close()

	u := *server.URL
	u.User = nil
	fmt.Printf("VCSIM_URL=%s\n", u.String())
	_ = os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
