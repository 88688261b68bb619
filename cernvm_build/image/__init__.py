"""μCernVM boot images: kernel, formats (iso, hdd, qcow2, vmdk, vdi, vhd), signature block, the build."""
