//! The baseline's optimizer split (REFERENCE.md §3.6): Muon for the 2-D block matrices, Adam for
//! the tied embedding (its own LR), the untied head if any, and the scalar/control parameters.
//! Every step: LRs = base · lr_mul, Muon momentum from the warm-up ramp, optional global clip.

use anyhow::Result;
use pgolf_model::{param_role, Gpt, ParamRole};
use pgolf_optim::{clip_grad_norm, Adam, AdamGroup, Collective, Muon};
use tch::Tensor;

use crate::params::Params;

pub struct Optimizers {
    muon: Muon,
    adam: Adam,
    all: Vec<Tensor>,
    grad_clip_norm: f64,
    matrix_lr: f64,
}

impl Optimizers {
    pub fn new(gpt: &Gpt, p: &Params, comm: &dyn Collective) -> Result<Optimizers> {
        let (mut matrices, mut embed, mut head, mut scalars) = (vec![], vec![], vec![], vec![]);
        for (name, t) in gpt.named_parameters() {
            let t = t.shallow_clone();
            let projection = name == "bigram.proj.weight" || name == "ve_shared.proj.weight";
            if p.projections_to_adam && projection {
                scalars.push(t);
                continue;
            }
            match param_role(name, t.dim()) {
                ParamRole::Matrix => matrices.push(t),
                ParamRole::Embedding => embed.push(t),
                ParamRole::Head => head.push(t),
                ParamRole::Control => scalars.push(t),
            }
        }
        let all = gpt
            .named_parameters()
            .iter()
            .map(|(_, t)| t.shallow_clone())
            .collect();
        let token_lr = if gpt.config().tie_embeddings {
            p.tied_embed_lr
        } else {
            p.embed_lr
        };
        let mut groups = vec![
            AdamGroup::new("tok_emb", embed, token_lr),
            AdamGroup::new("scalars", scalars, p.scalar_lr),
        ];
        if !head.is_empty() {
            groups.push(AdamGroup::new("lm_head", head, p.head_lr));
        }
        // AdamW's decay on the token and scalar groups (R0427: the token embedding its own); the
        // untied head keeps plain Adam (R0322's `optimizer_head` is `torch.optim.Adam`).
        for g in groups.iter_mut() {
            g.weight_decay = match g.name.as_str() {
                "lm_head" => 0.0,
                "tok_emb" => p.embed_weight_decay.unwrap_or(p.adam_weight_decay),
                _ => p.adam_weight_decay,
            };
        }
        let adam = Adam::new(groups, p.beta1, p.beta2, p.adam_eps);
        let mut muon = Muon::new(
            matrices,
            p.matrix_lr,
            p.muon_momentum,
            p.muon_backend_steps,
            comm.rank(),
            comm.world_size(),
        )?;
        muon.weight_decay = p.muon_weight_decay;
        muon.row_normalize = p.muon_row_normalize;
        muon.coefficients = p.muon_coefficients;
        Ok(Optimizers {
            muon,
            adam,
            all,
            grad_clip_norm: p.grad_clip_norm,
            matrix_lr: p.matrix_lr,
        })
    }

    /// Zeroes every gradient (they accumulate over the micro-batches of a step).
    pub fn zero_grad(&mut self) {
        for t in &mut self.all {
            t.zero_grad();
        }
    }

    /// Averages gradients over ranks, clips, and steps every optimizer.
    pub fn step(&mut self, lr_mul: f64, muon_momentum: f64, comm: &dyn Collective) -> Result<()> {
        crate::ranks::average_gradients(&self.all, comm)?;
        if self.grad_clip_norm > 0.0 {
            let _total_norm = clip_grad_norm(&self.all, self.grad_clip_norm);
        }
        self.muon.momentum = muon_momentum;
        self.muon.lr = self.matrix_lr * lr_mul;
        self.adam.step(lr_mul)?;
        self.muon.step(comm)
    }
}
