//! Xen 4.17's structures as bindgen generated them from libxen-dev, checked
//! against the reference sizes and against the layouts the engine writes by
//! hand (src/x86, src/stream): both must agree with Xen byte for byte.

use rxmigrate::x86::{shared_info as si, start_info, vcpu};
use std::mem::{offset_of, size_of};
use xen_sys::*;

#[test]
fn vcpu_context_is_5168_bytes_with_the_engines_offsets() {
    assert_eq!(size_of::<vcpu_guest_context_x86_64>(), 5168);
    assert_eq!(
        size_of::<vcpu_guest_context_x86_64>(),
        vcpu::CONTEXT_SIZE_64
    );
    assert_eq!(
        size_of::<vcpu_guest_context_x86_32>(),
        vcpu::CONTEXT_SIZE_32
    );
    assert_eq!(rxmigrate::hv::xen::VCPU_BASIC_SIZE, 5168);
    type C = vcpu_guest_context_x86_64;
    assert_eq!(offset_of!(C, flags), vcpu::FLAGS);
    assert_eq!(offset_of!(C, user_regs), vcpu::USER_REGS);
    assert_eq!(size_of::<cpu_user_regs_x86_64>(), vcpu::USER_REGS_SIZE);
    assert_eq!(offset_of!(C, trap_ctxt), vcpu::TRAP_CTXT);
    assert_eq!(offset_of!(C, ldt_base), vcpu::LDT_BASE);
    assert_eq!(offset_of!(C, ldt_ents), vcpu::LDT_ENTS);
    assert_eq!(offset_of!(C, gdt_frames), vcpu::GDT_FRAMES);
    assert_eq!(offset_of!(C, gdt_ents), vcpu::GDT_ENTS);
    assert_eq!(offset_of!(C, kernel_ss), vcpu::KERNEL_SS);
    assert_eq!(offset_of!(C, kernel_sp), vcpu::KERNEL_SP);
    assert_eq!(offset_of!(C, ctrlreg), vcpu::CTRLREG);
    assert_eq!(offset_of!(C, debugreg), vcpu::DEBUGREG);
    assert_eq!(offset_of!(C, event_callback_eip), vcpu::EVENT_CALLBACK_EIP);
    assert_eq!(
        offset_of!(C, failsafe_callback_eip),
        vcpu::FAILSAFE_CALLBACK_EIP
    );
    assert_eq!(
        offset_of!(C, syscall_callback_eip),
        vcpu::SYSCALL_CALLBACK_EIP
    );
    assert_eq!(offset_of!(C, vm_assist), vcpu::VM_ASSIST);
    assert_eq!(offset_of!(C, fs_base), vcpu::FS_BASE);
    assert_eq!(offset_of!(C, gs_base_kernel), vcpu::GS_BASE_KERNEL);
    assert_eq!(offset_of!(C, gs_base_user), vcpu::GS_BASE_USER);
    type R = cpu_user_regs_x86_64;
    // rdx carries the start_info frame across suspend; rax the suspend result.
    assert_eq!(
        vcpu::USER_REGS + offset_of!(R, __bindgen_anon_11),
        vcpu::RAX
    );
    assert_eq!(
        vcpu::USER_REGS + offset_of!(R, __bindgen_anon_13),
        vcpu::RDX
    );
    assert_eq!(VGCF_online, 32);
}

#[test]
fn shared_info_arch_fields_where_the_engine_reads_them() {
    assert_eq!(size_of::<shared_info>(), si::STRUCT_SIZE);
    assert_eq!(offset_of!(shared_info, evtchn_pending), si::EVTCHN_PENDING);
    assert_eq!(offset_of!(shared_info, evtchn_mask), si::EVTCHN_MASK);
    assert_eq!(offset_of!(shared_info, wc_version), si::WC_VERSION);
    assert_eq!(offset_of!(shared_info, wc_sec_hi), si::WC_SEC_HI);
    let arch = offset_of!(shared_info, arch);
    assert_eq!(arch, si::ARCH);
    assert_eq!(size_of::<arch_shared_info>(), si::ARCH_SIZE);
    assert_eq!(arch + offset_of!(arch_shared_info, max_pfn), si::MAX_PFN);
    assert_eq!(
        arch + offset_of!(arch_shared_info, pfn_to_mfn_frame_list_list),
        si::PFN_TO_MFN_FRAME_LIST_LIST
    );
    assert_eq!(arch + offset_of!(arch_shared_info, p2m_cr3), si::P2M_CR3);
    assert_eq!(
        arch + offset_of!(arch_shared_info, p2m_vaddr),
        si::P2M_VADDR
    );
    assert_eq!(
        arch + offset_of!(arch_shared_info, p2m_generation),
        si::P2M_GENERATION
    );
    assert_eq!(size_of::<vcpu_info>(), si::VCPU_INFO_SIZE);
}

#[test]
fn start_info_fields_the_restore_rewrites() {
    type S = start_info_x86_64;
    assert_eq!(size_of::<S>(), start_info::SIZE);
    assert_eq!(offset_of!(S, nr_pages), start_info::NR_PAGES);
    assert_eq!(offset_of!(S, shared_info), start_info::SHARED_INFO);
    assert_eq!(offset_of!(S, flags), start_info::FLAGS);
    assert_eq!(offset_of!(S, store_mfn), start_info::STORE_MFN);
    assert_eq!(offset_of!(S, store_evtchn), start_info::STORE_EVTCHN);
    assert_eq!(offset_of!(S, console), start_info::CONSOLE_MFN);
    assert_eq!(offset_of!(S, console) + 8, start_info::CONSOLE_EVTCHN);
    assert_eq!(offset_of!(S, pt_base), start_info::PT_BASE);
    assert_eq!(offset_of!(S, cmd_line), start_info::CMD_LINE);
    assert_eq!(offset_of!(S, first_p2m_pfn), start_info::FIRST_P2M_PFN);
}

#[test]
fn record_entry_sizes() {
    // X86_CPUID_POLICY leaves and X86_MSR_POLICY / X86_PV_VCPU_MSRS entries.
    assert_eq!(size_of::<xen_cpuid_leaf_t>(), 24);
    assert_eq!(size_of::<xen_msr_entry_t>(), 16);
    assert_eq!(size_of::<xen_domctl_vcpu_msr_t>(), 16);
    assert_eq!(rxmigrate::hv::xen::VCPU_MSR_SIZE, 16);
    // HVM_CONTEXT entries start with an 8-byte descriptor.
    assert_eq!(
        size_of::<hvm_save_descriptor>(),
        rxmigrate::stream::hvm_context::DESC_SIZE
    );
    // The ext context is copied whole into the domctl union.
    assert!(size_of::<xen_domctl_ext_vcpucontext>() <= 128);
    // Xen's dirty bitmaps are arrays of native longs: bit p = pfn p.
    assert_eq!(size_of::<xen_pfn_t>(), 8);
}

#[test]
fn hypercall_abi_numbers_match_the_reference() {
    // docs/REFERENCE.md §11
    assert_eq!(XEN_DOMCTL_getdomaininfo, 5);
    assert_eq!(XEN_DOMCTL_shadow_op, 10);
    assert_eq!(XEN_DOMCTL_set_address_size, 35);
    assert_eq!(XEN_DOMCTL_get_ext_vcpucontext, 43);
    assert_eq!(XEN_DOMCTL_getpageframeinfo3, 61);
    assert_eq!(XEN_DOMCTL_getvcpuextstate, 63);
    assert_eq!(XEN_DOMCTL_get_vcpu_msrs, 72);
    assert_eq!(XEN_DOMCTL_SHADOW_OP_OFF, 0);
    assert_eq!(XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, 2);
    assert_eq!(XEN_DOMCTL_SHADOW_OP_CLEAN, 11);
    assert_eq!(XEN_DOMCTL_SHADOW_OP_PEEK, 12);
    assert_eq!(XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL, 1);
    // Xen 4.17's domctl interface (not a stable ABI: the libraries pin it).
    assert_eq!(XEN_DOMCTL_INTERFACE_VERSION, 0x15);
    assert_eq!(SHUTDOWN_suspend, 2);
    assert_eq!(XEN_DOMCTL_PFINFO_XTAB >> 28, 0xF);
    assert_eq!(XEN_DOMCTL_PFINFO_LPINTAB >> 28, 0x8);
}
