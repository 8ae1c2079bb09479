# Booting a lab machine: shared by ci/lab/run and ci/lab/pair (sourced).
# Kept out of lib.sh on purpose: lib.sh is part of the image's hash
# (lab_key), and how a machine is booted does not change the image.

# Fills QEMU_ARGS for one lab machine:
#   lab_qemu_args IMG SMP XFER_IMG PIDFILE DOM0_EXTRA_ARGS [QEMU_ARGS...]
# The extra QEMU arguments (ci/lab/pair: the link to the other machine) come last.
lab_qemu_args() {
    local img=$1 smp=$2 xfer=$3 pidfile=$4 dom0_extra=$5
    shift 5
    # conswitch=ax: the serial console's input stays with Xen (nothing types
    # to dom0), so that a hung boot can be asked for Xen's debug keys
    # (ci/lab/run, before it stops a stalled QEMU)
    local xen_cmd="console=com1 com1=115200,8n1 conswitch=ax loglvl=all guest_loglvl=all dom0_mem=1024M,max:1024M dom0_max_vcpus=$smp"
    local dom0_cmd="console=hvc0 earlyprintk=xen root=LABEL=xenroot ro rootwait quiet loglevel=4 init=/usr/local/sbin/lab-init $dom0_extra"
    # TCG only: this host's /dev/kvm cannot run ordinary guests; qemu64+svm+npt
    # is the one CPU model under which Xen gets HAP (PVH/HVM) and dom0 lives.
    # No NIC to the host: nothing leaves the machine (-nic none; a pair's
    # private link is an explicit -netdev/-device among the extra arguments).
    # shellcheck disable=SC2054 # the commas are QEMU's
    QEMU_ARGS=(
        -accel tcg,thread=multi,tb-size=512 -cpu qemu64,+svm,+npt -smp "$smp" -m 3072
        -machine pc -nodefaults -nographic -no-reboot -monitor none -nic none -vga none
        -serial stdio -pidfile "$pidfile"
        -kernel "$img/boot/xen" -append "$xen_cmd"
        -initrd "$img/boot/vmlinuz $dom0_cmd,$img/boot/initrd.img"
        -drive "file=$img/dom0.img,format=raw,if=virtio,cache=unsafe,snapshot=on"
        -drive "file=$xfer,format=raw,if=virtio,cache=unsafe"
        "$@"
    )
}

# Seconds since the start of the boot on each serial line.
lab_stamp() {
    local l
    SECONDS=0
    while IFS= read -r l; do printf '[%4d] %s\n' "$SECONDS" "$l"; done
}
