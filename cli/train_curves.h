/* train_curves.h — vit train's --log CSV and --plot PNG (cli/train_curves.c). */
#ifndef CLI_TRAIN_CURVES_H
#define CLI_TRAIN_CURVES_H

#include <stddef.h>

#include "vit_trainer.h"

/* Writes the log: timm's summary.csv columns (epoch, train_loss, eval_loss,
 * eval_top1, eval_top5, lr; accuracies in percent) then images_per_s and
 * train_top1, a row per epoch of history. speeds[i]: images/s of epoch
 * first_epoch_here + 1 + i, run by this process; an earlier epoch's comes
 * from old_log (the file being continued, or NULL: left empty). 0, or -1
 * (message printed). */
int cli_train_write_log(const char *path, const vit_trainer_epoch *history, size_t count,
                        const double *speeds, long first_epoch_here, const char *old_log);

/* Draws loss and accuracy against the epoch, side by side, into a PNG. 0,
 * or -1 (message printed). */
int cli_train_plot(const char *path, const vit_trainer_epoch *history, size_t count);

#endif
