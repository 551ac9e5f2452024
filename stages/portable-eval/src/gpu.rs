//! The wgpu side: finding and choosing an adapter (`--device`), the device and queue, f32/u32
//! storage buffers, compiled kernels, and a recorded list of dispatches that runs as one compute
//! pass and reads results back.
//!
//! Backends are wgpu's native ones (Vulkan on Linux and Windows, Metal on macOS, DX12 on Windows);
//! `WGPU_BACKEND` narrows them as wgpu documents. No GL: it needs a display stack for nothing
//! a compute program uses.

use anyhow::{anyhow, bail, Context, Result};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// The line for a machine where wgpu finds nothing to compute on.
pub const NO_ADAPTER: &str = "no adapter: wgpu found no Vulkan, Metal or DX12 device (install the GPU's driver, or Mesa's software Vulkan: apt-get install mesa-vulkan-drivers)";

fn instance() -> wgpu::Instance {
    // Mesa's implicit device-select layer connects to the desktop's display server to order the
    // GPUs (printing "XDG_RUNTIME_DIR is invalid" where there is none); we order them ourselves.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    wgpu::Instance::new(desc.with_env())
}

/// Every adapter wgpu finds, best first: discrete GPUs, integrated, virtual, other, then CPU
/// (software) ones; the order `--device list` numbers them in.
pub fn adapters() -> Vec<wgpu::Adapter> {
    let mut all = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    all.sort_by_key(|a| rank(&a.get_info()));
    all
}

fn rank(info: &wgpu::AdapterInfo) -> u8 {
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn kind(info: &wgpu::AdapterInfo) -> &'static str {
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Other => "other",
        wgpu::DeviceType::Cpu => "CPU",
    }
}

/// One line for people: `NVIDIA H100 80GB HBM3 (Vulkan, discrete GPU; NVIDIA 570.86)`.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{} ({:?}, {}{})",
        info.name,
        info.backend,
        kind(info),
        if driver.is_empty() {
            String::new()
        } else {
            format!("; {driver}")
        }
    )
}

/// `--device list`: the adapters, numbered, one a line.
pub fn list() -> Result<String> {
    let all = adapters();
    if all.is_empty() {
        bail!("{NO_ADAPTER}");
    }
    Ok(all
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i}: {}\n", describe(&a.get_info())))
        .collect())
}

/// The adapter `spec` names (docs/STAGES.md "portable-eval"):
/// - `cpu`: the first CPU (software) adapter, e.g. Mesa's lavapipe;
/// - `gpu`, `cuda`, `auto`: the best non-CPU adapter (`auto` falls back to a CPU one);
///   `gpu:N` / `cuda:N` the N-th non-CPU adapter;
/// - `N`: adapter N of `--device list`;
/// - anything else: the first adapter whose name contains it (case-insensitive), e.g. `H100`.
pub fn choose(spec: &str) -> Result<wgpu::Adapter> {
    let all = adapters();
    if all.is_empty() {
        bail!("{NO_ADAPTER}");
    }
    let is_cpu = |a: &wgpu::Adapter| a.get_info().device_type == wgpu::DeviceType::Cpu;
    let names = || {
        all.iter()
            .enumerate()
            .map(|(i, a)| format!("{i}: {}", a.get_info().name))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let gpus = || {
        all.iter()
            .filter(|a| !is_cpu(a))
            .cloned()
            .collect::<Vec<_>>()
    };
    let spec_l = spec.to_lowercase();
    let nth_gpu = |n: usize| {
        gpus().into_iter().nth(n).ok_or_else(|| {
            anyhow!(
                "--device {spec}: wgpu found {} GPU adapter(s) (adapters: {})",
                gpus().len(),
                names()
            )
        })
    };
    if let Some(n) = ["gpu:", "cuda:"]
        .iter()
        .find_map(|p| spec_l.strip_prefix(p))
    {
        let n: usize = n
            .parse()
            .map_err(|_| anyhow!("--device {spec}: expected gpu:N"))?;
        return nth_gpu(n);
    }
    match spec_l.as_str() {
        "cpu" => all.iter().find(|a| is_cpu(a)).cloned().ok_or_else(|| {
            anyhow!(
                "--device cpu: no CPU adapter (Mesa's software Vulkan: apt-get install mesa-vulkan-drivers); adapters: {}",
                names()
            )
        }),
        "gpu" | "cuda" => nth_gpu(0),
        "auto" => Ok(all[0].clone()),
        _ => {
            if let Ok(n) = spec.parse::<usize>() {
                return all.get(n).cloned().ok_or_else(|| {
                    anyhow!("--device {n}: there are {} adapters ({})", all.len(), names())
                });
            }
            all.iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&spec_l))
                .cloned()
                .ok_or_else(|| anyhow!("--device {spec}: no adapter by that name ({})", names()))
        }
    }
}

/// A device and its queue.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
}

impl Gpu {
    /// Opens `adapter` with the largest limits it offers (big models need buffers above the
    /// WebGPU defaults).
    pub fn open(adapter: &wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("portable-eval"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .with_context(|| format!("{}: cannot open the device", describe(&info)))?;
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
        })
    }

    /// The largest buffer one binding may hold, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// A device buffer holding `data` (f32 or u32).
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Buf {
        // A zero-sized binding is invalid: keep one element.
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let contents = if bytes.is_empty() {
            &[0u8; 4][..]
        } else {
            bytes
        };
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents,
                usage: STORAGE,
            });
        Buf {
            buffer: Arc::new(buffer),
        }
    }

    /// An uninitialised (zeroed, as wgpu guarantees) buffer of `len` 4-byte elements.
    pub fn zeros(&self, len: usize) -> Buf {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (len.max(1) * 4) as u64,
            usage: STORAGE,
            mapped_at_creation: false,
        });
        Buf {
            buffer: Arc::new(buffer),
        }
    }

    /// Compiles entry point `entry` of WGSL `source`; a shader the device refuses is an error
    /// naming it (not a panic).
    pub fn kernel(&self, name: &str, source: &str, entry: &str) -> Result<Kernel> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            bail!("shader {name}::{entry}: {e}");
        }
        let layout = pipeline.get_bind_group_layout(0);
        Ok(Kernel {
            name: format!("{name}::{entry}"),
            pipeline,
            layout,
        })
    }
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A device buffer of 4-byte elements.
#[derive(Clone)]
pub struct Buf {
    pub buffer: Arc<wgpu::Buffer>,
}

pub struct Kernel {
    name: String,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// A kernel's uniform arguments: 4-byte scalars in the order its WGSL `Args` struct declares them.
#[derive(Default, Clone)]
pub struct Args(Vec<u32>);

impl Args {
    pub fn u(mut self, v: usize) -> Args {
        self.0
            .push(u32::try_from(v).expect("a kernel argument fits u32"));
        self
    }

    pub fn f(mut self, v: f32) -> Args {
        self.0.push(v.to_bits());
        self
    }
}

/// Bytes between two kernels' argument blocks: the strictest uniform offset alignment wgpu
/// allows a device to ask for.
const ARGS_STRIDE: usize = 256;

struct Dispatch<'k> {
    kernel: &'k Kernel,
    bufs: Vec<Buf>,
    args: Args,
    groups: [u32; 3],
}

/// Dispatches recorded in order, then run as one compute pass (wgpu orders each dispatch after the
/// writes it reads), followed by the read-backs.
#[derive(Default)]
pub struct Plan<'k> {
    dispatches: Vec<Dispatch<'k>>,
    reads: Vec<(Buf, usize, usize)>,
}

/// Work-groups of `size` covering `n` items along x, spilling into y past the 65,535 limit (the
/// kernels recover the flat index as `x + y · groups_x · size`).
pub fn groups_1d(n: usize, size: usize) -> [u32; 3] {
    let g = n.div_ceil(size).max(1);
    let x = g.min(65_535);
    [x as u32, g.div_ceil(x) as u32, 1]
}

impl<'k> Plan<'k> {
    /// `kernel` over `bufs` (its bindings 0.., in order; the arguments take the next binding).
    pub fn run(&mut self, kernel: &'k Kernel, bufs: &[&Buf], args: Args, groups: [u32; 3]) {
        self.dispatches.push(Dispatch {
            kernel,
            bufs: bufs.iter().map(|b| (*b).clone()).collect(),
            args,
            groups,
        });
    }

    /// Reads elements `start..start+len` of `buf` back after the pass.
    pub fn read(&mut self, buf: &Buf, start: usize, len: usize) -> usize {
        self.reads.push((buf.clone(), start, len));
        self.reads.len() - 1
    }

    /// Runs the recorded work and returns each read, as raw 4-byte elements, in order.
    pub fn submit(self, gpu: &Gpu) -> Result<Vec<Vec<u32>>> {
        let dev = &gpu.device;
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut blocks = vec![0u32; (self.dispatches.len() * ARGS_STRIDE / 4).max(1)];
        for (i, d) in self.dispatches.iter().enumerate() {
            let at = i * ARGS_STRIDE / 4;
            blocks[at..at + d.args.0.len()].copy_from_slice(&d.args.0);
        }
        let args = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("args"),
            contents: bytemuck::cast_slice(&blocks),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let groups: Vec<wgpu::BindGroup> = self
            .dispatches
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut entries: Vec<wgpu::BindGroupEntry> = d
                    .bufs
                    .iter()
                    .enumerate()
                    .map(|(b, buf)| wgpu::BindGroupEntry {
                        binding: b as u32,
                        resource: buf.buffer.as_entire_binding(),
                    })
                    .collect();
                entries.push(wgpu::BindGroupEntry {
                    binding: d.bufs.len() as u32,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &args,
                        offset: (i * ARGS_STRIDE) as u64,
                        size: std::num::NonZeroU64::new(ARGS_STRIDE as u64),
                    }),
                });
                dev.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&d.kernel.name),
                    layout: &d.kernel.layout,
                    entries: &entries,
                })
            })
            .collect();
        let mut encoder = dev.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for (d, group) in self.dispatches.iter().zip(&groups) {
                pass.set_pipeline(&d.kernel.pipeline);
                pass.set_bind_group(0, group, &[]);
                let [x, y, z] = d.groups;
                pass.dispatch_workgroups(x, y, z);
            }
        }
        let total: usize = self.reads.iter().map(|r| r.2.max(1)).sum();
        let staging = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: (total.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut at = 0usize;
        let mut spans = Vec::with_capacity(self.reads.len());
        for (buf, start, len) in &self.reads {
            if *len > 0 {
                encoder.copy_buffer_to_buffer(
                    &buf.buffer,
                    (*start * 4) as u64,
                    &staging,
                    (at * 4) as u64,
                    (*len * 4) as u64,
                );
            }
            spans.push(at..at + len);
            at += len.max(&1);
        }
        gpu.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        dev.poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow!("{}: the device failed: {e}", gpu.info.name))?;
        if let Some(e) = pollster::block_on(oom.pop()) {
            bail!("{}: out of device memory: {e}", gpu.info.name);
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            bail!("{}: {e}", gpu.info.name);
        }
        rx.recv()
            .map_err(|_| anyhow!("{}: the read-back never completed", gpu.info.name))?
            .map_err(|e| anyhow!("{}: cannot read results back: {e}", gpu.info.name))?;
        let view = slice
            .get_mapped_range()
            .map_err(|e| anyhow!("{}: cannot map the read-back: {e}", gpu.info.name))?;
        let all: &[u32] = bytemuck::cast_slice(&view);
        let out = spans.into_iter().map(|r| all[r].to_vec()).collect();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}
