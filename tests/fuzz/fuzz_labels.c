/* fuzz_labels — the two label-list readers: one class name per line
 * (--labels) and the labelled-file CSV of `vit eval --labels-csv`.
 * Input: one text file, read as both. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    base_error err;
    data_labelled_files rows = {0};
    if (data_labels_csv_parse((const char *)data, size, "labels.csv", 1000, &rows, &err) == BASE_OK)
        for (size_t i = 0; i < rows.count; i++)
            if (rows.classes[i] < 0 || rows.classes[i] >= 1000 || !rows.files[i]) abort();
    data_labelled_files_free(&rows);

    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char **labels;
    int count;
    if (data_labels_parse(text, "labels.txt", 100000, &labels, &count, &err) == BASE_OK) {
        for (int i = 0; i < count; i++)
            if (!labels[i] || strchr(labels[i], '\n')) abort();
        data_labels_free(labels, count);
    }
    free(text);
    return 0;
}
